//! JSON to and from `google.protobuf.Struct`, once for every service. Protobuf
//! numbers are doubles, so whole numbers are given back as JSON integers, as
//! `config.json` files and deployment contexts were written.

use serde_json::Value;

use crate::wkt::Struct;

/// A JSON object as a `Struct`; None when `value` is not an object.
pub fn to_struct(value: &Value) -> Option<Struct> {
    if !value.is_object() {
        return None;
    }
    serde_json::from_value(value.clone()).ok()
}

/// A `Struct` as JSON, whole numbers as integers.
pub fn from_struct(value: &Struct) -> Value {
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
