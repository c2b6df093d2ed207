//! What may be minted: each mint or attenuation request checked and turned into a
//! `TokenSpec`, or refused with a reason the caller can act on. Pure functions, so
//! the rules are tested without a server.
//!
//! The rule for every minter: a token never creates a token with a permission or a
//! life it lacks itself. The one exception is the workflow: a full user token (a
//! login, not attenuated) mints service and config tokens of any allowed life. A
//! token minted by an attenuated token names it as parent, so revoking the minter
//! revokes what it minted.

use chrono::Duration;
use common::{
    scope,
    token::{Claims, TokenType},
};
use proto::auth::v1 as pb;

use crate::tokens::TokenSpec;

pub const SERVICE_TOKEN_MAX_DAYS: u32 = 180;
pub const CONFIG_TOKEN_MAX_DAYS: u32 = 365;
pub const CONFIG_TOKEN_DEFAULT_DAYS: u32 = 30;
pub const DEPLOYMENT_TOKEN_MIN_SECS: u64 = 60;
pub const DEPLOYMENT_TOKEN_MAX_SECS: u64 = 7 * 24 * 3600;
/// Extra claims of a config token, serialized, at most this many bytes.
pub const MAX_EXTRA_CLAIMS_BYTES: usize = 4096;
const MAX_LABEL_LEN: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("{0}")]
    Invalid(String),
    /// The request asks for more than the presenting token has.
    #[error("{0}")]
    Wider(String),
}

fn invalid(message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid(message.into())
}

/// A service name as the services directory allows it: a plain folder name.
pub fn check_service_name(name: &str) -> Result<(), PolicyError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{name:?} is not a valid service name")))
    }
}

fn check_label(what: &str, value: &str) -> Result<(), PolicyError> {
    if value.len() > MAX_LABEL_LEN || value.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{what} must be at most {MAX_LABEL_LEN} characters without control characters"
        )));
    }
    Ok(())
}

/// A permission list for a token of `token_type`: every entry must be one that type
/// has by default. An empty list means "the type's defaults".
fn check_permissions(token_type: TokenType, permissions: &[String]) -> Result<Option<Vec<String>>, PolicyError> {
    if permissions.is_empty() {
        return Ok(None);
    }
    let defaults = scope::defaults(token_type);
    if let Some(bad) = permissions.iter().find(|p| !defaults.iter().any(|d| d == *p)) {
        return Err(invalid(format!(
            "a {token_type} token cannot have the permission {bad:?}"
        )));
    }
    let mut list = permissions.to_vec();
    list.sort();
    list.dedup();
    Ok(Some(list))
}

fn days(n: u32) -> Duration {
    Duration::days(i64::from(n))
}

/// A service token minted by `user` (contract 2.5, with the service's existence
/// checked by the caller). The origin may be empty, as fastDeploy allows (its web
/// frontend sends `""` by default); it is then stored and signed as empty.
pub fn service_token(user: &str, request: &pb::MintServiceTokenRequest) -> Result<TokenSpec, PolicyError> {
    check_service_name(&request.service)?;
    check_label("origin", &request.origin)?;
    check_label("name", &request.name)?;
    let n = request.expiration_in_days;
    if !(1..=SERVICE_TOKEN_MAX_DAYS).contains(&n) {
        return Err(invalid(format!(
            "expiration_in_days must be between 1 and {SERVICE_TOKEN_MAX_DAYS}"
        )));
    }
    Ok(TokenSpec {
        user: Some(user.to_owned()),
        service: Some(request.service.clone()),
        origin: Some(request.origin.clone()),
        permissions: check_permissions(TokenType::Service, &request.permissions)?,
        ..TokenSpec::new(TokenType::Service, format!("service:{}", request.service), days(n))
    })
}

/// A config token minted by `user`, optionally limited to some services, carrying
/// extra claims as given.
pub fn config_token(user: &str, request: &pb::MintConfigTokenRequest) -> Result<TokenSpec, PolicyError> {
    for service in &request.services {
        check_service_name(service)?;
    }
    check_label("name", &request.name)?;
    let n = match request.expiration_in_days {
        0 => CONFIG_TOKEN_DEFAULT_DAYS,
        n if n <= CONFIG_TOKEN_MAX_DAYS => n,
        _ => {
            return Err(invalid(format!(
                "expiration_in_days must be between 1 and {CONFIG_TOKEN_MAX_DAYS}"
            )));
        }
    };
    let ext = match &request.extra_claims {
        None => None,
        Some(s) if s.fields.is_empty() => None,
        Some(s) => {
            let value = serde_json::to_value(s).map_err(|_| invalid("extra_claims must be a JSON object"))?;
            if value.to_string().len() > MAX_EXTRA_CLAIMS_BYTES {
                return Err(invalid(format!(
                    "extra_claims must be at most {MAX_EXTRA_CLAIMS_BYTES} bytes of JSON"
                )));
            }
            match value {
                serde_json::Value::Object(map) => Some(map),
                _ => return Err(invalid("extra_claims must be a JSON object")),
            }
        }
    };
    let mut services = request.services.clone();
    services.sort();
    services.dedup();
    Ok(TokenSpec {
        user: Some(user.to_owned()),
        services: (!services.is_empty()).then_some(services),
        ext,
        ..TokenSpec::new(TokenType::Config, format!("config:{user}"), days(n))
    })
}

/// A deployment token for one run, asked for by the deploy service.
pub fn deployment_token(request: &pb::MintDeploymentTokenRequest) -> Result<TokenSpec, PolicyError> {
    if request.deployment_id <= 0 {
        return Err(invalid("deployment_id must be positive"));
    }
    check_service_name(&request.service)?;
    let secs = request.lifetime_seconds;
    if !(DEPLOYMENT_TOKEN_MIN_SECS..=DEPLOYMENT_TOKEN_MAX_SECS).contains(&secs) {
        return Err(invalid(format!(
            "lifetime_seconds must be between {DEPLOYMENT_TOKEN_MIN_SECS} and {DEPLOYMENT_TOKEN_MAX_SECS}"
        )));
    }
    Ok(TokenSpec {
        service: Some(request.service.clone()),
        deployment: Some(request.deployment_id),
        // Both bounds are checked above, so this fits.
        ..TokenSpec::new(
            TokenType::Deployment,
            format!("deployment:{}", request.deployment_id),
            Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX)),
        )
    })
}

/// `spec` as minted by the holder of `minter`: unchanged for a full user token;
/// otherwise it may not carry a permission the minter lacks, outlive it, or leave an
/// origin it is pinned to, and it records the minter as its parent.
pub fn bound_by_minter(minter: &Claims, mut spec: TokenSpec, now: i64) -> Result<TokenSpec, PolicyError> {
    let full_user = minter.token_type == TokenType::User && minter.permissions.is_none() && minter.parent.is_none();
    if full_user {
        return Ok(spec);
    }
    let have = scope::effective(minter);
    let wanted: Vec<String> = match &spec.permissions {
        Some(list) => list.clone(),
        None => scope::defaults(spec.token_type)
            .iter()
            .copied()
            .map(String::from)
            .collect(),
    };
    if let Some(missing) = wanted.iter().find(|p| !have.iter().any(|h| h == *p)) {
        return Err(PolicyError::Wider(format!(
            "the presented token does not have the permission {missing:?}, so it cannot mint a token that has it"
        )));
    }
    let exp = spec
        .expires_at
        .unwrap_or_else(|| now.saturating_add(spec.life.num_seconds()));
    if exp > minter.exp {
        return Err(PolicyError::Wider(format!(
            "a token minted by a narrowed token cannot outlive it (it expires in {} s)",
            minter.exp.saturating_sub(now).max(0)
        )));
    }
    if let Some(pinned) = &minter.origin {
        match &spec.origin {
            Some(origin) if origin != pinned => {
                return Err(PolicyError::Wider(format!(
                    "the presented token is pinned to origin {pinned:?}"
                )));
            }
            _ => spec.origin = Some(pinned.clone()),
        }
    }
    spec.parent = Some(minter.jti.clone());
    Ok(spec)
}

/// A token derived from `parent`: a subset of its permissions, no longer life, and an
/// origin that may be pinned but never changed. Everything else is inherited.
pub fn attenuate(parent: &Claims, request: &pb::AttenuateTokenRequest, now: i64) -> Result<TokenSpec, PolicyError> {
    check_label("name", &request.name)?;
    let have = scope::effective(parent);
    let permissions = if request.permissions.is_empty() {
        parent.permissions.clone()
    } else {
        if let Some(extra) = request.permissions.iter().find(|p| !have.iter().any(|h| h == *p)) {
            return Err(PolicyError::Wider(format!(
                "the presented token does not have the permission {extra:?}"
            )));
        }
        let mut list = request.permissions.clone();
        list.sort();
        list.dedup();
        Some(list)
    };
    let exp = match request.lifetime_seconds {
        0 => parent.exp,
        secs => {
            let wanted = now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX));
            if wanted > parent.exp {
                return Err(PolicyError::Wider(
                    "a derived token cannot outlive the presented token".into(),
                ));
            }
            wanted
        }
    };
    let origin = match (&parent.origin, request.origin.as_str()) {
        (_, "") => parent.origin.clone(),
        (Some(have), want) if have != want => {
            return Err(PolicyError::Wider(format!(
                "the presented token is pinned to origin {have:?}"
            )));
        }
        (_, want) => {
            check_label("origin", want)?;
            Some(want.to_owned())
        }
    };
    Ok(TokenSpec {
        expires_at: Some(exp),
        user: parent.user.clone(),
        service: parent.service.clone(),
        origin,
        deployment: parent.deployment,
        permissions,
        parent: Some(parent.jti.clone()),
        services: parent.services.clone(),
        ext: parent.ext.clone(),
        ..TokenSpec::new(parent.token_type, parent.sub.clone(), Duration::zero())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service_claims(now: i64) -> Claims {
        Claims {
            iss: "slipway".into(),
            aud: "slipway".into(),
            sub: "service:web".into(),
            iat: now,
            nbf: now,
            exp: now + 3600,
            jti: "parent".into(),
            token_type: TokenType::Service,
            user: Some("alice".into()),
            service: Some("web".into()),
            origin: None,
            deployment: None,
            permissions: None,
            parent: None,
            services: None,
            ext: None,
        }
    }

    #[test]
    fn service_tokens_follow_the_contract_ranges() {
        let mut request = pb::MintServiceTokenRequest {
            service: "web".into(),
            origin: "github".into(),
            expiration_in_days: 180,
            ..Default::default()
        };
        let spec = service_token("alice", &request).unwrap();
        assert_eq!(spec.life, Duration::days(180));
        assert_eq!(spec.service.as_deref(), Some("web"));
        request.expiration_in_days = 181;
        assert!(service_token("alice", &request).is_err());
        request.expiration_in_days = 0;
        assert!(service_token("alice", &request).is_err());
        request.expiration_in_days = 1;
        request.service = "../etc".into();
        assert!(service_token("alice", &request).is_err());
        request.service = "web".into();
        request.permissions = vec![scope::SERVICES_SYNC.into()];
        assert!(service_token("alice", &request).is_err(), "beyond the service defaults");
        request.permissions = vec![scope::DEPLOYMENTS_READ.into()];
        assert_eq!(
            service_token("alice", &request).unwrap().permissions,
            Some(vec![scope::DEPLOYMENTS_READ.to_string()])
        );
    }

    #[test]
    fn attenuation_only_narrows() {
        let now = 1_000_000;
        let parent = service_claims(now);
        let narrower = pb::AttenuateTokenRequest {
            permissions: vec![scope::DEPLOYMENTS_READ.into()],
            lifetime_seconds: 60,
            origin: "ci".into(),
            ..Default::default()
        };
        let spec = attenuate(&parent, &narrower, now).unwrap();
        assert_eq!(spec.expires_at, Some(now + 60));
        assert_eq!(spec.parent.as_deref(), Some("parent"));
        assert_eq!(spec.origin.as_deref(), Some("ci"));
        assert_eq!(spec.service.as_deref(), Some("web"));

        let wider = pb::AttenuateTokenRequest {
            permissions: vec![scope::SERVICES_SYNC.into()],
            ..Default::default()
        };
        assert!(matches!(attenuate(&parent, &wider, now), Err(PolicyError::Wider(_))));
        let longer = pb::AttenuateTokenRequest {
            lifetime_seconds: 7200,
            ..Default::default()
        };
        assert!(matches!(attenuate(&parent, &longer, now), Err(PolicyError::Wider(_))));

        // A child of a narrowed token cannot get back what its parent dropped.
        let mut child = parent.clone();
        child.permissions = Some(vec![scope::DEPLOYMENTS_READ.into()]);
        child.origin = Some("ci".into());
        let regain = pb::AttenuateTokenRequest {
            permissions: vec![scope::DEPLOYMENTS_START.into()],
            ..Default::default()
        };
        assert!(matches!(attenuate(&child, &regain, now), Err(PolicyError::Wider(_))));
        let repin = pb::AttenuateTokenRequest {
            origin: "laptop".into(),
            ..Default::default()
        };
        assert!(matches!(attenuate(&child, &repin, now), Err(PolicyError::Wider(_))));
    }

    fn user_claims(now: i64) -> Claims {
        Claims {
            sub: "user:alice".into(),
            jti: "login".into(),
            token_type: TokenType::User,
            service: None,
            ..service_claims(now)
        }
    }

    #[test]
    fn only_a_full_user_token_mints_beyond_itself() {
        let now = 1_000_000;
        let config = |days| pb::MintConfigTokenRequest {
            expiration_in_days: days,
            ..Default::default()
        };
        let year = config_token("alice", &config(365)).unwrap();

        // A login token: as today, a year, no parent.
        let full = user_claims(now);
        let spec = bound_by_minter(&full, year.clone(), now).unwrap();
        assert_eq!((spec.parent, spec.life), (None, Duration::days(365)));

        // Attenuated to tokens:mint for 60 s: no deployed-services:read, no year.
        let mut narrowed = user_claims(now);
        narrowed.jti = "narrowed".into();
        narrowed.parent = Some("login".into());
        narrowed.permissions = Some(vec![scope::TOKENS_MINT.into()]);
        narrowed.exp = now + 60;
        assert!(matches!(
            bound_by_minter(&narrowed, year.clone(), now),
            Err(PolicyError::Wider(_))
        ));
        narrowed.permissions = Some(vec![scope::TOKENS_MINT.into(), scope::DEPLOYED_SERVICES_READ.into()]);
        assert!(matches!(
            bound_by_minter(&narrowed, year.clone(), now),
            Err(PolicyError::Wider(_))
        ));
        narrowed.exp = now + 2 * 86400;
        let spec = bound_by_minter(&narrowed, config_token("alice", &config(1)).unwrap(), now).unwrap();
        assert_eq!(spec.parent.as_deref(), Some("narrowed"));

        // Only shortened, all permissions kept: still bound by its life and recorded.
        let mut shortened = user_claims(now);
        shortened.parent = Some("login".into());
        assert!(bound_by_minter(&shortened, year, now).is_err());

        // A service token the minter lacks deployments:start for, and a pinned origin.
        let service = |permissions: Vec<String>, origin: &str| {
            service_token(
                "alice",
                &pb::MintServiceTokenRequest {
                    service: "web".into(),
                    origin: origin.into(),
                    expiration_in_days: 1,
                    permissions,
                    ..Default::default()
                },
            )
            .unwrap()
        };
        narrowed.permissions = Some(vec![scope::TOKENS_MINT.into(), scope::DEPLOYMENTS_READ.into()]);
        narrowed.origin = Some("ci".into());
        assert!(bound_by_minter(&narrowed, service(vec![], "ci"), now).is_err());
        let read_only = vec![scope::DEPLOYMENTS_READ.to_string()];
        assert!(bound_by_minter(&narrowed, service(read_only.clone(), "laptop"), now).is_err());
        let spec = bound_by_minter(&narrowed, service(read_only, "ci"), now).unwrap();
        assert_eq!(spec.parent.as_deref(), Some("narrowed"));
    }

    #[test]
    fn config_tokens_carry_services_and_bounded_extra_claims() {
        let extra: proto::wkt::Struct = serde_json::from_value(serde_json::json!({"team": "ops"})).unwrap();
        let request = pb::MintConfigTokenRequest {
            services: vec!["web".into(), "api".into(), "web".into()],
            extra_claims: Some(extra),
            ..Default::default()
        };
        let spec = config_token("alice", &request).unwrap();
        assert_eq!(spec.services, Some(vec!["api".to_owned(), "web".to_owned()]));
        assert_eq!(spec.ext.unwrap()["team"], "ops");
        assert_eq!(spec.life, Duration::days(i64::from(CONFIG_TOKEN_DEFAULT_DAYS)));
        let huge: proto::wkt::Struct = serde_json::from_value(serde_json::json!({"blob": "x".repeat(5000)})).unwrap();
        let request = pb::MintConfigTokenRequest {
            extra_claims: Some(huge),
            ..Default::default()
        };
        assert!(config_token("alice", &request).is_err());
    }

    #[test]
    fn deployment_token_lifetimes_are_bounded() {
        let mut request = pb::MintDeploymentTokenRequest {
            deployment_id: 7,
            service: "web".into(),
            lifetime_seconds: 3600,
        };
        assert_eq!(deployment_token(&request).unwrap().deployment, Some(7));
        request.lifetime_seconds = 10;
        assert!(deployment_token(&request).is_err());
        request.lifetime_seconds = 3600;
        request.deployment_id = 0;
        assert!(deployment_token(&request).is_err());
    }
}
