//! `POST /service-token` (contract 2.5): a user mints a service token. Unlike
//! fastDeploy, the service must exist. Validation answers in FastAPI's shapes, and
//! a body that is not JSON is 422 (once the token is known to be valid).

use axum::{Json, extract::State};
use proto::auth::v1::MintServiceTokenRequest;
use serde_json::{Map, Value, json};

use super::auth::with_token;
use crate::{
    error::{ApiError, missing, validation_error},
    interceptor::{Caller, JsonBody},
    server::AppState,
};

const DEFAULT_DAYS: i64 = 1;
const MAX_DAYS: i64 = 180;

/// The interceptor has verified the token, decoded the body and checked the token's
/// type.
pub async fn mint(
    State(state): State<AppState>,
    user: Caller,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let (service, origin, days) = validate(body)?;
    let request = MintServiceTokenRequest {
        service,
        origin,
        expiration_in_days: u32::try_from(days).unwrap_or(1),
        ..Default::default()
    };
    match state
        .backends
        .auth()
        .mint_service_token(with_token(request, &user.token)?)
        .await
    {
        Ok(minted) => Ok(Json(
            json!({ "service_token": minted.into_inner().token, "token_type": "bearer" }),
        )),
        Err(status) if status.code() == tonic::Code::Unauthenticated => Err(ApiError::invalid_credentials()),
        Err(status) => Err(ApiError::from_backend("auth", &status)),
    }
}

pub(crate) fn validate(body: Option<Value>) -> Result<(String, String, i64), ApiError> {
    let object = super::objects::body_object(body)?;
    let mut errors = Vec::new();
    let service = string_field(&object, "service", &mut errors);
    let origin = string_field(&object, "origin", &mut errors);
    let days = days_field(&object, &mut errors);
    match (service, origin, days) {
        (Some(s), Some(o), Some(d)) if errors.is_empty() => Ok((s, o, d)),
        _ => Err(ApiError::Validation(errors)),
    }
}

fn string_field(object: &Map<String, Value>, name: &str, errors: &mut Vec<Value>) -> Option<String> {
    match object.get(name) {
        Some(Value::String(s)) => Some(s.clone()),
        None => {
            errors.push(missing(&["body", name], Value::Object(object.clone())));
            None
        }
        Some(other) => {
            errors.push(validation_error(
                "string_type",
                &["body", name],
                "Input should be a valid string",
                other.clone(),
            ));
            None
        }
    }
}

/// `expiration_in_days`: an integer 1..=180, default 1; numeric strings and whole
/// floats are taken as pydantic's lax mode takes them.
fn days_field(object: &Map<String, Value>, errors: &mut Vec<Value>) -> Option<i64> {
    let loc = ["body", "expiration_in_days"];
    let raw = match object.get("expiration_in_days") {
        None => return Some(DEFAULT_DAYS),
        Some(v) => v,
    };
    let parsed = match raw {
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(i),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => Ok(f as i64),
            (None, Some(_)) => Err((
                "int_from_float",
                "Input should be a valid integer, got a number with a fractional part",
            )),
            _ => Err(("int_type", "Input should be a valid integer")),
        },
        Value::String(s) => s.trim().parse::<i64>().map_err(|_| {
            (
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer",
            )
        }),
        _ => Err(("int_type", "Input should be a valid integer")),
    };
    match parsed {
        Ok(n) if n < 1 => errors.push(json!({
            "type": "greater_than_equal", "loc": loc,
            "msg": "Input should be greater than or equal to 1", "input": raw, "ctx": { "ge": 1 },
        })),
        Ok(n) if n > MAX_DAYS => errors.push(json!({
            "type": "less_than_equal", "loc": loc,
            "msg": format!("Input should be less than or equal to {MAX_DAYS}"), "input": raw, "ctx": { "le": MAX_DAYS },
        })),
        Ok(n) => return Some(n),
        Err((kind, msg)) => errors.push(validation_error(kind, &loc, msg, raw.clone())),
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(body: Value) -> Vec<Value> {
        match validate(Some(body)) {
            Err(ApiError::Validation(e)) => e,
            other => panic!("expected 422, got {other:?}"),
        }
    }

    #[test]
    fn days_follow_pydantic_lax_rules() {
        let ok = |v: Value| {
            validate(Some(json!({"service": "a", "origin": "b", "expiration_in_days": v})))
                .unwrap()
                .2
        };
        assert_eq!(ok(json!(7)), 7);
        assert_eq!(ok(json!("7")), 7);
        assert_eq!(ok(json!(7.0)), 7);
        assert_eq!(validate(Some(json!({"service": "a", "origin": "b"}))).unwrap().2, 1);
        let kind =
            |v: Value| errors(json!({"service": "a", "origin": "b", "expiration_in_days": v}))[0]["type"].clone();
        assert_eq!(kind(json!(0)), "greater_than_equal");
        assert_eq!(kind(json!(181)), "less_than_equal");
        assert_eq!(kind(json!(1.5)), "int_from_float");
        assert_eq!(kind(json!("x")), "int_parsing");
        assert_eq!(kind(json!(null)), "int_type");
    }

    #[test]
    fn missing_and_wrong_fields_are_all_reported() {
        let e = errors(json!({"origin": 3}));
        assert_eq!(e.len(), 2);
        assert_eq!(e[0]["type"], "missing");
        assert_eq!(e[0]["loc"], json!(["body", "service"]));
        assert_eq!(e[1]["type"], "string_type");
        assert_eq!(errors(json!([1]))[0]["type"], "model_attributes_type");
    }
}
