//! Rows to proto messages, and JSON to and from `google.protobuf.Struct`.

use proto::{registry::v1 as pb, wkt};
use serde_json::Value;

use crate::storage::{deployed_services, services};

/// A JSON object as a `Struct`; None when `value` is not an object.
pub fn to_struct(value: &Value) -> Option<wkt::Struct> {
    if !value.is_object() {
        return None;
    }
    serde_json::from_value(value.clone()).ok()
}

/// A `Struct` as JSON. Protobuf numbers are doubles: whole numbers come back as JSON
/// integers, as they were written.
pub fn from_struct(value: &wkt::Struct) -> Value {
    let mut json = serde_json::to_value(value).unwrap_or(Value::Null);
    whole_numbers(&mut json);
    json
}

/// Largest integer a double holds exactly (2^53).
const EXACT: f64 = 9_007_199_254_740_992.0;

fn whole_numbers(value: &mut Value) {
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() <= EXACT) {
                *n = (f as i64).into();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        Value::Object(map) => map.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> wkt::Timestamp {
    wkt::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

pub fn service(row: &services::Model) -> pb::Service {
    pb::Service {
        id: row.id,
        name: row.name.clone(),
        data: Some(to_struct(&row.data).unwrap_or_default()),
    }
}

pub fn deployed(row: &deployed_services::Model) -> pb::DeployedService {
    pb::DeployedService {
        id: row.id,
        deployment_id: row.deployment_id,
        service: row.service.clone(),
        config: Some(to_struct(&row.config).unwrap_or_default()),
        published_at: Some(timestamp(row.published_at)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_objects_round_trip_through_struct_with_whole_numbers_kept() {
        let value = json!({"a": 1, "b": [1.5, -2, {"c": null}], "d": "x", "e": true, "f": 1e300});
        let back = from_struct(&to_struct(&value).unwrap());
        assert_eq!(back, value);
        assert_eq!(back["a"].to_string(), "1");
        assert!(to_struct(&json!([1])).is_none());
    }
}
