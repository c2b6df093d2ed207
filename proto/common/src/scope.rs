//! Permissions: what each token type may do by default, and what a token that
//! carries a narrower `permissions` list may do. One table, read by the gateway and
//! by every service.

use crate::token::{Claims, TokenType};

/// The name of a permission, as tokens carry it in their `permissions` claim (the
/// wire format stays a plain string). Only the constants below exist, so a service
/// name, a token id or a typo cannot stand where a permission is meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Permission(&'static str);

impl Permission {
    pub const fn as_str(self) -> &'static str {
        self.0
    }

    /// The permission named `name`, if there is one.
    pub fn named(name: &str) -> Option<Permission> {
        ALL.iter().copied().find(|p| p.0 == name)
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl From<Permission> for String {
    fn from(permission: Permission) -> String {
        permission.0.to_owned()
    }
}

impl PartialEq<str> for Permission {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Permission {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Permission {
    fn eq(&self, other: &String) -> bool {
        self.0 == other
    }
}

impl PartialEq<Permission> for &str {
    fn eq(&self, other: &Permission) -> bool {
        *self == other.0
    }
}

impl PartialEq<Permission> for String {
    fn eq(&self, other: &Permission) -> bool {
        self == other.0
    }
}

pub const SERVICES_READ: Permission = Permission("services:read");
pub const SERVICES_SYNC: Permission = Permission("services:sync");
pub const SERVICES_DELETE: Permission = Permission("services:delete");
pub const DEPLOYMENTS_READ: Permission = Permission("deployments:read");
pub const DEPLOYMENTS_START: Permission = Permission("deployments:start");
pub const DEPLOYMENTS_CANCEL: Permission = Permission("deployments:cancel");
pub const DEPLOYMENTS_FINISH: Permission = Permission("deployments:finish");
pub const STEPS_REPORT: Permission = Permission("steps:report");
pub const DEPLOYED_SERVICES_READ: Permission = Permission("deployed-services:read");
pub const TOKENS_MINT: Permission = Permission("tokens:mint");
pub const TOKENS_READ: Permission = Permission("tokens:read");
pub const TOKENS_REVOKE: Permission = Permission("tokens:revoke");
pub const KEYS_ROTATE: Permission = Permission("keys:rotate");
pub const USERS_READ: Permission = Permission("users:read");
pub const USERS_WRITE: Permission = Permission("users:write");

/// Every permission there is; a user token has them all.
pub const ALL: &[Permission] = &[
    SERVICES_READ,
    SERVICES_SYNC,
    SERVICES_DELETE,
    DEPLOYMENTS_READ,
    DEPLOYMENTS_START,
    DEPLOYMENTS_CANCEL,
    DEPLOYMENTS_FINISH,
    STEPS_REPORT,
    DEPLOYED_SERVICES_READ,
    TOKENS_MINT,
    TOKENS_READ,
    TOKENS_REVOKE,
    KEYS_ROTATE,
    USERS_READ,
    USERS_WRITE,
];

/// What a token of this type may do when it carries no narrower list. Service,
/// deployment and config tokens are further bound to their service or deployment by
/// the service that handles the call.
pub fn defaults(token_type: TokenType) -> &'static [Permission] {
    match token_type {
        TokenType::User => ALL,
        TokenType::Service => &[DEPLOYMENTS_START, DEPLOYMENTS_READ],
        TokenType::Deployment => &[STEPS_REPORT, DEPLOYMENTS_FINISH, DEPLOYMENTS_READ],
        TokenType::Config => &[DEPLOYED_SERVICES_READ],
    }
}

/// Whether `name` is a permission a token of this type can ever hold.
pub fn is_known(name: &str) -> bool {
    Permission::named(name).is_some()
}

/// The permissions a token actually has: its own list cut down to its type's
/// defaults (a list can only narrow), or the defaults when it has none.
pub fn effective(claims: &Claims) -> Vec<Permission> {
    let defaults = defaults(claims.token_type);
    match &claims.permissions {
        None => defaults.to_vec(),
        Some(list) => defaults
            .iter()
            .copied()
            .filter(|p| list.iter().any(|q| q == p))
            .collect(),
    }
}

/// Whether the token may do `permission`.
pub fn allows(claims: &Claims, permission: Permission) -> bool {
    defaults(claims.token_type).contains(&permission)
        && claims
            .permissions
            .as_ref()
            .is_none_or(|list| list.iter().any(|p| *p == permission))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::testing::{claims, now};

    #[test]
    fn a_list_only_narrows_and_never_adds_beyond_the_type() {
        let mut c = claims(now());
        c.token_type = TokenType::Service;
        assert!(allows(&c, DEPLOYMENTS_START));
        assert!(!allows(&c, SERVICES_SYNC));
        c.permissions = Some(vec![DEPLOYMENTS_READ.into(), SERVICES_SYNC.into()]);
        assert!(!allows(&c, DEPLOYMENTS_START));
        assert!(allows(&c, DEPLOYMENTS_READ));
        assert!(
            !allows(&c, SERVICES_SYNC),
            "a service token cannot gain a user permission"
        );
        assert_eq!(effective(&c), vec![DEPLOYMENTS_READ]);
    }

    #[test]
    fn every_default_is_a_known_permission() {
        for t in [
            TokenType::User,
            TokenType::Service,
            TokenType::Deployment,
            TokenType::Config,
        ] {
            assert!(defaults(t).iter().all(|p| is_known(p.as_str())));
        }
    }
}
