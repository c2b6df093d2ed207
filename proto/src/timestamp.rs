//! `google.protobuf.Timestamp` with proto3 canonical JSON: RFC 3339 in UTC with a `Z`
//! and 0, 3, 6 or 9 fractional digits (pbjson-types writes `+00:00`). Reading takes
//! any RFC 3339 offset.

use chrono::{DateTime, SecondsFormat, Utc};

#[derive(Clone, Copy, PartialEq, Eq, Hash, ::prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl prost::Name for Timestamp {
    const NAME: &'static str = "Timestamp";
    const PACKAGE: &'static str = "google.protobuf";
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(at: DateTime<Utc>) -> Self {
        Timestamp {
            seconds: at.timestamp(),
            nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
        }
    }
}

impl TryFrom<Timestamp> for DateTime<Utc> {
    type Error = &'static str;

    fn try_from(t: Timestamp) -> Result<Self, Self::Error> {
        let nanos = u32::try_from(t.nanos).map_err(|_| "negative nanos")?;
        DateTime::from_timestamp(t.seconds, nanos).ok_or("timestamp out of range")
    }
}

impl Timestamp {
    /// The canonical text: `2026-11-23T07:59:25.370399Z`.
    pub fn to_rfc3339(self) -> Option<String> {
        DateTime::<Utc>::try_from(self)
            .ok()
            .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self
            .to_rfc3339()
            .ok_or_else(|| serde::ser::Error::custom("timestamp out of range"))?;
        serializer.serialize_str(&text)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let at = DateTime::parse_from_rfc3339(&text).map_err(serde::de::Error::custom)?;
        Ok(at.with_timezone(&Utc).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_is_utc_with_z() {
        let t = Timestamp {
            seconds: 1_700_000_000,
            nanos: 370_399_000,
        };
        assert_eq!(serde_json::to_value(t).unwrap(), "2023-11-14T22:13:20.370399Z");
        let whole = Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        assert_eq!(serde_json::to_value(whole).unwrap(), "2023-11-14T22:13:20Z");
        let back: Timestamp = serde_json::from_str("\"2023-11-14T23:13:20.370399+01:00\"").unwrap();
        assert_eq!(back, t);
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }
}
