//! Migration from fastDeploy: its tokens are HS256 JWTs signed with one shared
//! `SECRET_KEY` and carry only `type`, `exp` and the type's own claims. While
//! legacy acceptance is on (off by default, and only until a cutoff date), such a
//! token can be traded for an equivalent short-lived Slipway token. The secret stays
//! in the auth service; nothing else ever verifies HS256.

use std::path::Path;

use chrono::{DateTime, Utc};
use common::token::TokenType;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::tokens::TokenSpec;

/// The longest an exchanged token lives (less if the legacy token expires sooner).
pub const EXCHANGED_LIFE_SECS: i64 = 600;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LegacyError {
    #[error("legacy tokens are not accepted")]
    Off,
    #[error("legacy tokens are no longer accepted (cutoff passed)")]
    PastCutoff,
    #[error("invalid legacy token")]
    Invalid,
    #[error("legacy {0} tokens cannot be exchanged")]
    Unsupported(TokenType),
}

/// The configured fastDeploy secret and cutoff. `Debug` never shows the secret.
pub struct Legacy {
    key: DecodingKey,
    until: DateTime<Utc>,
}

impl std::fmt::Debug for Legacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Legacy")
            .field("until", &self.until)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
struct LegacyClaims {
    #[serde(rename = "type")]
    token_type: TokenType,
    exp: i64,
    user: Option<String>,
    service: Option<String>,
    origin: Option<String>,
}

impl Legacy {
    pub fn new(secret: &SecretString, until: DateTime<Utc>) -> Self {
        Legacy {
            key: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
            until,
        }
    }

    /// Reads the secret from a file (one line, as fastDeploy's `SECRET_KEY`).
    pub fn load(path: &Path, until: DateTime<Utc>) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading legacy secret file {}: {e}", path.display()))?;
        let secret = SecretString::from(text.trim().to_owned());
        if secret.expose_secret().is_empty() {
            anyhow::bail!("legacy secret file {} is empty", path.display());
        }
        Ok(Legacy::new(&secret, until))
    }

    /// Checks a fastDeploy token and describes the Slipway token it is worth.
    pub fn exchange(&self, token: &str, now: DateTime<Utc>) -> Result<TokenSpec, LegacyError> {
        if now >= self.until {
            return Err(LegacyError::PastCutoff);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<LegacyClaims>(token, &self.key, &validation)
            .map_err(|_| LegacyError::Invalid)?
            .claims;
        let exp = claims.exp.min(now.timestamp() + EXCHANGED_LIFE_SECS);
        let life = chrono::Duration::zero();
        let spec = match claims.token_type {
            TokenType::User => {
                let user = claims.user.ok_or(LegacyError::Invalid)?;
                TokenSpec {
                    user: Some(user.clone()),
                    ..TokenSpec::new(TokenType::User, format!("user:{user}"), life)
                }
            }
            TokenType::Service => {
                let service = claims.service.ok_or(LegacyError::Invalid)?;
                crate::policy::check_service_name(&service).map_err(|_| LegacyError::Invalid)?;
                TokenSpec {
                    user: claims.user,
                    origin: claims.origin,
                    service: Some(service.clone()),
                    ..TokenSpec::new(TokenType::Service, format!("service:{service}"), life)
                }
            }
            TokenType::Config => TokenSpec {
                user: claims.user,
                ..TokenSpec::new(TokenType::Config, "config:legacy".into(), life)
            },
            // A fastDeploy deployment id means nothing here.
            TokenType::Deployment => return Err(LegacyError::Unsupported(TokenType::Deployment)),
        };
        Ok(TokenSpec {
            expires_at: Some(exp),
            ..spec
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn legacy() -> Legacy {
        Legacy::new(
            &SecretString::from("fastdeploy-secret"),
            Utc::now() + chrono::Duration::days(30),
        )
    }

    fn hs256(secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn a_fastdeploy_service_token_becomes_a_short_slipway_one() {
        let now = Utc::now();
        let exp = now.timestamp() + 86400 * 90;
        let token = hs256(
            "fastdeploy-secret",
            json!({"type": "service", "service": "web", "origin": "github", "user": "alice", "exp": exp}),
        );
        let spec = legacy().exchange(&token, now).unwrap();
        assert_eq!(spec.token_type, TokenType::Service);
        assert_eq!(spec.service.as_deref(), Some("web"));
        assert_eq!(spec.origin.as_deref(), Some("github"));
        assert_eq!(spec.expires_at, Some(now.timestamp() + EXCHANGED_LIFE_SECS));
    }

    #[test]
    fn refuses_wrong_secret_expired_deployment_and_after_the_cutoff() {
        let now = Utc::now();
        let exp = now.timestamp() + 600;
        let claims = json!({"type": "service", "service": "web", "exp": exp});
        assert_eq!(
            legacy().exchange(&hs256("other", claims.clone()), now).unwrap_err(),
            LegacyError::Invalid
        );
        let expired = json!({"type": "user", "user": "alice", "exp": now.timestamp() - 1});
        assert_eq!(
            legacy()
                .exchange(&hs256("fastdeploy-secret", expired), now)
                .unwrap_err(),
            LegacyError::Invalid
        );
        let deployment = json!({"type": "deployment", "deployment": 3, "exp": exp});
        assert!(matches!(
            legacy().exchange(&hs256("fastdeploy-secret", deployment), now),
            Err(LegacyError::Unsupported(_))
        ));
        let late = Legacy::new(
            &SecretString::from("fastdeploy-secret"),
            now - chrono::Duration::seconds(1),
        );
        assert_eq!(
            late.exchange(&hs256("fastdeploy-secret", claims), now).unwrap_err(),
            LegacyError::PastCutoff
        );
        assert!(!format!("{:?}", legacy()).contains("fastdeploy-secret"));
    }
}
