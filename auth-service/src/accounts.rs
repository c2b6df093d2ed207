//! User accounts: log in, create, make sure the bootstrap admin exists, disable,
//! enable and delete.
//!
//! Disabling keeps the account (name, hash, who disabled it) and refuses its logins;
//! enabling gives them back. Deleting removes the account; the name may be used
//! again. Both revoke every token the user holds or minted, through the revocation
//! feed. Nobody disables or deletes themselves, so the caller, an enabled user,
//! always remains: the last enabled user cannot be locked out.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use crate::{
    passwords::{Hasher, PasswordError, Verdict},
    storage::{Store, StoreError, users},
    user_cache::{Account, UserCache},
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
    #[error("user {0:?} not found")]
    UnknownUser(String),
    #[error("you cannot {0} your own account")]
    Yourself(&'static str),
}

/// What `disable` and `delete` did.
#[derive(Debug)]
pub struct Removed {
    /// The user as it is now (for `delete`, as it was).
    pub user: users::Model,
    /// The ids of the tokens revoked.
    pub revoked: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Accounts {
    store: Store,
    hasher: Hasher,
    /// Who exists and is enabled, for authenticated calls (see `user_cache`).
    cache: Arc<UserCache>,
}

impl Accounts {
    pub fn new(store: Store, hasher: Hasher) -> Self {
        Accounts {
            store,
            hasher,
            cache: Arc::default(),
        }
    }

    /// The user when name and password match and the account is enabled. Unknown
    /// and disabled users, wrong passwords and legacy (bcrypt) users cost the same
    /// hashing work (see `passwords`). A legacy hash is replaced by argon2id.
    pub async fn login(&self, name: &str, password: &SecretString) -> Result<Option<users::Model>, AccountError> {
        if name.is_empty() || name.len() > MAX_NAME_LEN || password.expose_secret().len() > MAX_PASSWORD_LEN {
            return Ok(None);
        }
        let user = self.store.find_user(name).await?.filter(users::Model::is_enabled);
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
                    self.refresh_legacy().await?;
                }
                Ok(Some(user))
            }
            _ => Ok(None),
        }
    }

    /// Reads which bcrypt cost the stored legacy hashes have (if any are left), so
    /// refusals cost what a legacy user's refusal costs. At start, after each rehash,
    /// and now and then (another replica or an import may change them).
    pub async fn refresh_legacy(&self) -> Result<(), AccountError> {
        let cost = self.store.legacy_bcrypt_cost().await?;
        self.hasher.set_legacy_cost(cost).await?;
        Ok(())
    }

    pub async fn create(&self, name: &str, password: &SecretString) -> Result<users::Model, AccountError> {
        validate_name(name)?;
        validate_password(password)?;
        let hash = self.hasher.hash(password).await?;
        let user = self.store.create_user(name, &hash).await;
        self.cache.invalidate(name);
        Ok(user?)
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
        let changed = self.store.set_password_hash(user.id, &hash, true).await;
        self.cache.invalidate(&user.name);
        Ok(changed?)
    }

    pub async fn find(&self, name: &str) -> Result<Option<users::Model>, AccountError> {
        Ok(self.store.find_user(name).await?)
    }

    /// The user, when it exists and is enabled, read from the database.
    pub async fn find_enabled(&self, name: &str) -> Result<Option<users::Model>, AccountError> {
        Ok(self.store.find_user(name).await?.filter(users::Model::is_enabled))
    }

    /// The user, when it exists and is enabled, from the cache when it holds `name`
    /// (see `user_cache` for how fresh that is).
    pub async fn find_enabled_cached(&self, name: &str) -> Result<Option<Account>, AccountError> {
        if let Some(account) = self.cache.get(name) {
            return Ok(account.filter(Account::is_enabled));
        }
        let generation = self.cache.generation();
        let account = self.store.find_user(name).await?.as_ref().map(Account::from);
        self.cache.put(name, account.clone(), generation);
        Ok(account.filter(Account::is_enabled))
    }

    /// Disables `name` (asked by `by`, who may not be `name`): logins are refused from
    /// now on and every token the user holds or minted is revoked. Disabling a
    /// disabled user revokes again whatever is left and keeps the first record.
    pub async fn disable(&self, name: &str, by: &str) -> Result<Removed, AccountError> {
        if name == by {
            return Err(AccountError::Yourself("disable"));
        }
        let existing = self.find_or_fail(name).await?;
        let user = if existing.is_enabled() {
            let disabled = self.store.set_user_disabled(name, Some(by)).await;
            self.cache.invalidate(name);
            disabled?.ok_or_else(|| AccountError::UnknownUser(name.to_owned()))?
        } else {
            existing
        };
        // After the flag is set: a token minted while this runs either is found here
        // or sees the flag when it checks again after recording itself.
        let revoked = self.store.revoke_user_tokens(name).await?;
        self.cache.invalidate(name);
        Ok(Removed { user, revoked })
    }

    /// Lets a disabled user log in again (the tokens revoked stay revoked).
    pub async fn enable(&self, name: &str) -> Result<users::Model, AccountError> {
        self.find_or_fail(name).await?;
        let enabled = self.store.set_user_disabled(name, None).await;
        self.cache.invalidate(name);
        enabled?.ok_or_else(|| AccountError::UnknownUser(name.to_owned()))
    }

    /// Deletes `name` (asked by `by`, who may not be `name`) and revokes every token
    /// the user holds or minted. The token registry keeps their records.
    pub async fn delete(&self, name: &str, by: &str) -> Result<Removed, AccountError> {
        if name == by {
            return Err(AccountError::Yourself("delete"));
        }
        let user = self.find_or_fail(name).await?;
        let deleted = self.store.delete_user(name).await;
        self.cache.invalidate(name);
        if !deleted? {
            return Err(AccountError::UnknownUser(name.to_owned()));
        }
        let revoked = self.store.revoke_user_tokens(name).await?;
        self.cache.invalidate(name);
        Ok(Removed { user, revoked })
    }

    async fn find_or_fail(&self, name: &str) -> Result<users::Model, AccountError> {
        self.store
            .find_user(name)
            .await?
            .ok_or_else(|| AccountError::UnknownUser(name.to_owned()))
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
