//! Conversions between the auth service's errors and rows and their gRPC forms.

use common::{
    error::{ErrorCode, with_retry_after},
    token::TokenError,
};
use proto::auth::v1::{self as pb};
use tonic::Status;

use crate::{
    accounts::AccountError, passwords::PasswordError, policy::PolicyError, storage::StoreError, user_cache::Account,
};

pub(super) fn policy_status(error: PolicyError) -> Status {
    match error {
        PolicyError::Invalid(m) => ErrorCode::InvalidArgument.status(m),
        PolicyError::Wider(m) => ErrorCode::PermissionDenied.status(m),
    }
}

/// The JSON of a token's header and payload, decoded without any checking (for
/// introspection only).
pub(super) fn decode_parts(token: &str) -> Option<(serde_json::Value, serde_json::Value)> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let mut parts = token.split('.');
    let (header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let decode = |part: &str| -> Option<serde_json::Value> {
        let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        value.is_object().then_some(value)
    };
    Some((decode(header)?, decode(payload)?))
}

pub(super) fn to_struct(value: serde_json::Value) -> Option<proto::wkt::Struct> {
    serde_json::from_value(value).ok()
}

pub(super) fn internal(error: impl std::error::Error + 'static) -> Status {
    if let Some(status) = common::db::outage_status(&error) {
        return status;
    }
    tracing::error!(%error, "internal error");
    ErrorCode::Internal.status("internal error")
}

pub(super) fn account_status(error: AccountError) -> Status {
    match error {
        AccountError::InvalidName(why) => ErrorCode::InvalidArgument.status(format!("invalid user name: {why}")),
        AccountError::InvalidPassword(why) => ErrorCode::InvalidArgument.status(format!("invalid password: {why}")),
        AccountError::Store(StoreError::UserExists(name)) => {
            Status::already_exists(format!("user {name:?} already exists"))
        }
        AccountError::UnknownUser(name) => ErrorCode::NotFound.status(format!("user {name:?} not found")),
        error @ AccountError::Yourself(_) => ErrorCode::Conflict.status(error.to_string()),
        AccountError::Password(PasswordError::Busy) => with_retry_after(
            ErrorCode::Unavailable.status("Too many password checks at once; try again shortly"),
            1,
        ),
        other => internal(other),
    }
}

pub(super) fn timestamp(seconds: i64) -> proto::wkt::Timestamp {
    proto::wkt::Timestamp { seconds, nanos: 0 }
}

pub(super) fn user_message(user: Account) -> pb::User {
    pb::User {
        id: user.id,
        name: user.name,
        disabled_at: user.disabled_at.map(Into::into),
        disabled_by: user.disabled_by.unwrap_or_default(),
        created_at: Some(user.created_at.into()),
    }
}

pub(super) fn count(ids: &[String]) -> u32 {
    u32::try_from(ids.len()).unwrap_or(u32::MAX)
}

/// Whether a verification failure came after the signature checked out (the token is
/// one the auth service signed, only outside its time window).
pub(super) fn signature_verified(error: &TokenError) -> bool {
    matches!(error, TokenError::Expired | TokenError::NotYetValid)
}
