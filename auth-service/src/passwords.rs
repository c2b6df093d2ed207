//! Password hashing: argon2id for new hashes; fastDeploy's bcrypt hashes are accepted
//! and reported for rehashing. Hashing runs on the blocking pool behind a semaphore
//! so a burst of logins never starves other requests, and an unknown user is checked
//! against a dummy hash so it costs the same time as a wrong password.

use std::sync::Arc;

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("hashing task failed")]
    Join(#[from] tokio::task::JoinError),
    #[error("hasher closed")]
    Closed,
}

/// The outcome of checking a password.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Wrong password or unknown user.
    Refused,
    /// Right password; `rehash` says the stored hash is a legacy one to replace.
    Accepted { rehash: bool },
}

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    dummy_hash: Arc<str>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("permits", &self.permits.available_permits())
            .finish()
    }
}

impl Hasher {
    /// At most `parallel` hashes run at once (leave a core for everything else).
    pub async fn new(parallel: usize) -> Result<Self, PasswordError> {
        let permits = Arc::new(Semaphore::new(parallel.max(1)));
        let dummy = tokio::task::spawn_blocking(|| hash_blocking("slipway-dummy-password")).await??;
        Ok(Hasher {
            permits,
            dummy_hash: dummy.into(),
        })
    }

    /// One hashing slot fewer than the machine has cores, at least one.
    pub async fn for_this_machine() -> Result<Self, PasswordError> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Self::new(cores.saturating_sub(1)).await
    }

    pub async fn hash(&self, password: &SecretString) -> Result<String, PasswordError> {
        let _permit = self.permits.acquire().await.map_err(|_| PasswordError::Closed)?;
        let password = password.clone();
        tokio::task::spawn_blocking(move || hash_blocking(password.expose_secret())).await?
    }

    /// Checks `password` against `stored`, or against the dummy hash when the user is
    /// unknown (`stored` is `None`), so both paths cost the same.
    pub async fn verify(&self, password: &SecretString, stored: Option<&str>) -> Result<Verdict, PasswordError> {
        let _permit = self.permits.acquire().await.map_err(|_| PasswordError::Closed)?;
        let password = password.clone();
        let known = stored.is_some();
        let stored: String = stored.map(str::to_owned).unwrap_or_else(|| self.dummy_hash.to_string());
        let verdict = tokio::task::spawn_blocking(move || verify_blocking(password.expose_secret(), &stored)).await?;
        Ok(if known { verdict } else { Verdict::Refused })
    }
}

fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

fn verify_blocking(password: &str, stored: &str) -> Verdict {
    if is_bcrypt(stored) {
        return match bcrypt::verify(password, stored) {
            Ok(true) => Verdict::Accepted { rehash: true },
            _ => Verdict::Refused,
        };
    }
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Verdict::Refused;
    };
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Verdict::Accepted { rehash: false },
        Err(_) => Verdict::Refused,
    }
}

fn is_bcrypt(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"].iter().any(|p| stored.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[tokio::test]
    async fn argon2id_round_trip_and_refusals() {
        let hasher = Hasher::new(1).await.unwrap();
        let hash = hasher.hash(&secret("hunter2")).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert_eq!(
            hasher.verify(&secret("hunter2"), Some(&hash)).await.unwrap(),
            Verdict::Accepted { rehash: false }
        );
        assert_eq!(
            hasher.verify(&secret("hunter3"), Some(&hash)).await.unwrap(),
            Verdict::Refused
        );
        assert_eq!(hasher.verify(&secret("hunter2"), None).await.unwrap(), Verdict::Refused);
        assert_eq!(
            hasher.verify(&secret("x"), Some("not a hash")).await.unwrap(),
            Verdict::Refused
        );
    }

    #[tokio::test]
    async fn fastdeploy_bcrypt_hashes_are_accepted_and_marked_for_rehash() {
        let hasher = Hasher::new(1).await.unwrap();
        let legacy = bcrypt::hash("s3cret", 4).unwrap();
        assert_eq!(
            hasher.verify(&secret("s3cret"), Some(&legacy)).await.unwrap(),
            Verdict::Accepted { rehash: true }
        );
        assert_eq!(
            hasher.verify(&secret("wrong"), Some(&legacy)).await.unwrap(),
            Verdict::Refused
        );
    }
}
