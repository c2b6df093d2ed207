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
        let now = Utc::now().timestamp();
        let claims = Claims {
            iss: common::ISSUER.into(),
            aud: common::AUDIENCE.into(),
            sub: format!("user:{name}"),
            iat: now,
            nbf: now,
            exp: now + self.user_token_life.num_seconds(),
            jti: uuid::Uuid::new_v4().to_string(),
            token_type: TokenType::User,
            user: Some(name.to_owned()),
            service: None,
            origin: None,
            deployment: None,
            permissions: None,
            parent: None,
            services: None,
            ext: None,
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
