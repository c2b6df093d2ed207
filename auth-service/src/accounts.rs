//! User accounts: log in, create, make sure the bootstrap admin exists.

use secrecy::{ExposeSecret, SecretString};

use crate::{
    passwords::{Hasher, PasswordError, Verdict},
    storage::{Store, StoreError, users},
};

/// Longest accepted user name and password; longer input is refused without hashing.
pub const MAX_NAME_LEN: usize = 255;
pub const MAX_PASSWORD_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("invalid user name: {0}")]
    InvalidName(&'static str),
    #[error("invalid password: {0}")]
    InvalidPassword(&'static str),
}

#[derive(Debug, Clone)]
pub struct Accounts {
    store: Store,
    hasher: Hasher,
}

impl Accounts {
    pub fn new(store: Store, hasher: Hasher) -> Self {
        Accounts { store, hasher }
    }

    /// The user when name and password match. An unknown user costs the same hashing
    /// work as a wrong password. A legacy (bcrypt) hash is replaced by argon2id.
    pub async fn login(&self, name: &str, password: &SecretString) -> Result<Option<users::Model>, AccountError> {
        if name.is_empty() || name.len() > MAX_NAME_LEN || password.expose_secret().len() > MAX_PASSWORD_LEN {
            return Ok(None);
        }
        let user = self.store.find_user(name).await?;
        let verdict = self
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await?;
        match (verdict, user) {
            (Verdict::Accepted { rehash }, Some(user)) => {
                if rehash {
                    let hash = self.hasher.hash(password).await?;
                    self.store.set_password_hash(user.id, &hash, false).await?;
                    tracing::info!(user = %user.name, "legacy password hash replaced with argon2id");
                }
                Ok(Some(user))
            }
            _ => Ok(None),
        }
    }

    pub async fn create(&self, name: &str, password: &SecretString) -> Result<users::Model, AccountError> {
        validate_name(name)?;
        validate_password(password)?;
        let hash = self.hasher.hash(password).await?;
        Ok(self.store.create_user(name, &hash).await?)
    }

    /// Creates the user unless it exists; returns whether it was created.
    pub async fn ensure(&self, name: &str, password: &SecretString) -> Result<bool, AccountError> {
        if self.store.find_user(name).await?.is_some() {
            return Ok(false);
        }
        match self.create(name, password).await {
            Ok(_) => Ok(true),
            Err(AccountError::Store(StoreError::UserExists(_))) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sets a new password for `user` (the old one already checked by the caller).
    pub async fn set_password(&self, user: &users::Model, password: &SecretString) -> Result<(), AccountError> {
        validate_password(password)?;
        let hash = self.hasher.hash(password).await?;
        self.store.set_password_hash(user.id, &hash, true).await?;
        Ok(())
    }

    pub async fn find(&self, name: &str) -> Result<Option<users::Model>, AccountError> {
        Ok(self.store.find_user(name).await?)
    }
}

fn validate_name(name: &str) -> Result<(), AccountError> {
    if name.is_empty() {
        return Err(AccountError::InvalidName("empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(AccountError::InvalidName("longer than 255 bytes"));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(AccountError::InvalidName("contains whitespace or control characters"));
    }
    Ok(())
}

fn validate_password(password: &SecretString) -> Result<(), AccountError> {
    let len = password.expose_secret().chars().count();
    if len < 8 {
        return Err(AccountError::InvalidPassword("shorter than 8 characters"));
    }
    if password.expose_secret().len() > MAX_PASSWORD_LEN {
        return Err(AccountError::InvalidPassword("longer than 1024 bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("alice").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name("a\u{0}").is_err());
        assert!(validate_name(&"a".repeat(256)).is_err());
    }

    #[test]
    fn passwords_are_checked() {
        assert!(validate_password(&SecretString::from("long enough")).is_ok());
        assert!(validate_password(&SecretString::from("short")).is_err());
        assert!(validate_password(&SecretString::from("x".repeat(1025))).is_err());
    }
}
