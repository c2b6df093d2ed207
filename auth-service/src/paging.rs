//! ListTokens pages. Tokens are listed newest first (creation time, then id, both
//! descending); a page token names the last token of the previous page by that key
//! (keyset pagination), so pages never skip or repeat a token while others are minted.
//! The token is opaque to callers (`common::paging`); one this list did not give is
//! INVALID_ARGUMENT.

use chrono::{DateTime, Utc};
use common::paging;

use crate::storage::{Store, StoreError, TokenFilter, tokens};

/// Token ids are UUIDs; anything much longer did not come from this service.
const MAX_ID_LEN: usize = 128;

/// Where a page starts: just after the token with this creation time and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: String,
}

impl Cursor {
    /// The cursor in a page token this list gave (`None` for anything else).
    pub fn decode(token: &str) -> Option<Cursor> {
        paging::decode::<Cursor>(token).ok().flatten()
    }
}

impl paging::Cursor for Cursor {
    const LIST: &'static str = "tokens";

    /// `"<seconds>.<nanoseconds>:<id>"`.
    fn to_key(&self) -> String {
        format!(
            "{}.{:09}:{}",
            self.created_at.timestamp(),
            self.created_at.timestamp_subsec_nanos(),
            self.id
        )
    }

    fn from_key(key: &str) -> Option<Cursor> {
        let (at, id) = key.split_once(':')?;
        let (seconds, nanos) = at.split_once('.')?;
        if nanos.len() != 9 || id.is_empty() || id.len() > MAX_ID_LEN {
            return None;
        }
        let created_at = DateTime::from_timestamp(seconds.parse().ok()?, nanos.parse().ok()?)?;
        Some(Cursor {
            created_at,
            id: id.to_owned(),
        })
    }
}

/// One page of the tokens matching `filter`, after `after`, and the page token of the
/// next page (empty when this is the last).
pub async fn page(
    store: &Store,
    filter: &TokenFilter,
    after: Option<&Cursor>,
    requested_size: u32,
) -> Result<(Vec<tokens::Model>, String), StoreError> {
    let size = paging::TOKENS.of(requested_size);
    // One more than the page says whether another page follows.
    let rows = store.list_tokens_page(filter, after, Some(u64::from(size) + 1)).await?;
    Ok(paging::split_page(rows, size, |last| Cursor {
        created_at: last.created_at,
        id: last.id.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use common::paging::{InvalidPageToken, decode, encode};

    use super::*;

    #[test]
    fn cursors_round_trip_to_the_nanosecond() {
        let created_at = DateTime::from_timestamp(1_767_225_600, 123_456_789).unwrap();
        let cursor = Cursor {
            created_at,
            id: "0b8e6f0e-2f6a-4c55-9d51-0c1f3b0f6c2a".into(),
        };
        let token = encode(&cursor);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(decode::<Cursor>(&token), Ok(Some(cursor)));
        let whole_second = Cursor {
            created_at: DateTime::from_timestamp(0, 0).unwrap(),
            id: "x".into(),
        };
        assert_eq!(decode::<Cursor>(&encode(&whole_second)), Ok(Some(whole_second)));
    }

    #[test]
    fn anything_else_is_refused() {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let b64 = |s: &str| URL_SAFE_NO_PAD.encode(format!("1:tokens:{s}"));
        for bad in [
            "garbage!".to_owned(),
            "42".into(),
            b64("no-separator"),
            b64("12.123456789:"),
            b64("12.12345:id"),
            b64("twelve.123456789:id"),
            b64("12.999999999999:id"),
            b64(&format!("12.123456789:{}", "x".repeat(MAX_ID_LEN + 1))),
            // A deployments list's token.
            URL_SAFE_NO_PAD.encode("1:deployments:7"),
            "A".repeat(10_000),
        ] {
            assert_eq!(decode::<Cursor>(&bad), Err(InvalidPageToken), "{bad:?}");
        }
    }
}
