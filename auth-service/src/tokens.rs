//! Minting tokens: claims for each type, signed with the active key.

use std::sync::Arc;

use chrono::{Duration, Utc};
use common::token::{Claims, TokenType};
use jsonwebtoken::{Algorithm, Header};

use crate::keys::{KeyError, KeyRing};

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("signing failed")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

#[derive(Debug, Clone)]
pub struct Minter {
    keys: Arc<KeyRing>,
    user_token_life: Duration,
}

impl Minter {
    pub fn new(keys: Arc<KeyRing>, user_token_minutes: u32) -> Self {
        Minter {
            keys,
            user_token_life: Duration::minutes(i64::from(user_token_minutes)),
        }
    }

    /// A user token for `name`.
    pub fn user_token(&self, name: &str) -> Result<(String, Claims), MintError> {
        self.mint(TokenSpec {
            user: Some(name.to_owned()),
            ..TokenSpec::new(TokenType::User, format!("user:{name}"), self.user_token_life)
        })
    }

    /// Signs a token as `spec` describes, with a fresh `jti`, valid from now.
    pub fn mint(&self, spec: TokenSpec) -> Result<(String, Claims), MintError> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            iss: common::ISSUER.into(),
            aud: common::AUDIENCE.into(),
            sub: spec.subject,
            iat: now,
            nbf: now,
            exp: spec.expires_at.unwrap_or(now + spec.life.num_seconds()),
            jti: uuid::Uuid::new_v4().to_string(),
            token_type: spec.token_type,
            user: spec.user,
            service: spec.service,
            origin: spec.origin,
            deployment: spec.deployment,
            permissions: spec.permissions,
            parent: spec.parent,
            services: spec.services,
            ext: spec.ext,
        };
        Ok((self.sign(&claims)?, claims))
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, MintError> {
        let key = self.keys.active()?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid);
        Ok(jsonwebtoken::encode(&header, claims, &key.encoding)?)
    }
}

/// What a new token says; `Minter::mint` adds the registered claims.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub token_type: TokenType,
    pub subject: String,
    pub life: Duration,
    /// An absolute expiry instead of `life` (a derived token never outlives its parent).
    pub expires_at: Option<i64>,
    pub user: Option<String>,
    pub service: Option<String>,
    pub origin: Option<String>,
    pub deployment: Option<i64>,
    pub permissions: Option<Vec<String>>,
    pub parent: Option<String>,
    pub services: Option<Vec<String>>,
    pub ext: Option<serde_json::Map<String, serde_json::Value>>,
}

impl TokenSpec {
    pub fn new(token_type: TokenType, subject: String, life: Duration) -> Self {
        TokenSpec {
            token_type,
            subject,
            life,
            expires_at: None,
            user: None,
            service: None,
            origin: None,
            deployment: None,
            permissions: None,
            parent: None,
            services: None,
            ext: None,
        }
    }
}

/// The registry row of a freshly minted token.
pub fn record_of(claims: &Claims, name: &str, created_by: &str) -> crate::storage::tokens::Model {
    let at = |seconds: i64| chrono::DateTime::from_timestamp(seconds, 0).unwrap_or_default();
    crate::storage::tokens::Model {
        id: claims.jti.clone(),
        token_type: claims.token_type.as_str().to_owned(),
        name: name.to_owned(),
        subject: claims.sub.clone(),
        service: claims.service.clone(),
        origin: claims.origin.clone(),
        permissions: claims.permissions.as_ref().map(|p| serde_json::json!(p)),
        created_by: created_by.to_owned(),
        created_at: at(claims.iat),
        expires_at: at(claims.exp),
        revoked_at: None,
        parent_id: claims.parent.clone(),
        deployment_id: claims.deployment,
    }
}
