//! The scope table: who may call each RPC of the three services, as data. Every
//! backend serves its API behind one tonic layer ([`crate::authz`]) that looks each call
//! up in [`RPCS`], verifies the token and checks the entry before the handler runs; the
//! gateway's gRPC and grpc-web proxy checks the same entries with the same function
//! ([`Access::check`]) before anything reaches a backend, and its HTTP routes that serve
//! an RPC take the RPC's rule from here (the gateway's route table, `gateway::routes`).
//! Tests keep the table complete: every RPC of the descriptor set has exactly one entry.

use tonic::Status;

use crate::{
    error::ErrorCode,
    identity::{DEPLOY_SERVICE, GATEWAY, REGISTRY_SERVICE},
    scope::{self, Permission},
    token::{
        Claims, TokenError,
        TokenType::{self, Config, Deployment, Service, User},
    },
};

/// Who may call an RPC (or a gateway route).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token (logging in, public keys).
    Open,
    /// Never through the gateway, and never with a token: only the internal services
    /// the entry names, directly, with their own credential.
    Internal,
    /// Any valid token, of any type.
    AnyToken,
    /// A valid token of one of `types` that holds `permission` (when given).
    Token {
        types: &'static [TokenType],
        permission: Option<Permission>,
    },
}

/// Why a call is refused: the one refusal type of the backends' authorization layer,
/// of the gateway's gRPC proxy and of its HTTP interceptor. Mapped once to a gRPC
/// status (`From<Refusal> for Status`); the gateway maps it to HTTP by its APIs'
/// rules. The text is safe to show and to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("missing bearer token")]
    MissingToken,
    /// Malformed, badly signed, of another issuer or audience, not yet valid.
    #[error("invalid token")]
    Invalid,
    #[error("token expired")]
    Expired,
    #[error("token revoked")]
    Revoked,
    /// The revocation feed is stale: no token can be trusted (fail closed).
    #[error("token revocation list unavailable")]
    RevocationsUnavailable,
    #[error("this call is internal to Slipway and not served at the edge")]
    Internal,
    #[error("a {got} token may not make this call")]
    WrongType { got: TokenType },
    #[error("this token may not {0}")]
    Missing(Permission),
}

impl Refusal {
    /// A short label of the reason, for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::MissingToken => "missing token",
            Refusal::Invalid => "invalid",
            Refusal::Expired => "expired",
            Refusal::Revoked => "revoked",
            Refusal::RevocationsUnavailable => "revocations unavailable",
            Refusal::Internal => "internal",
            Refusal::WrongType { .. } => "wrong type",
            Refusal::Missing(_) => "permission",
        }
    }

    /// The error code of the refusal: no usable token is UNAUTHENTICATED, a stale
    /// revocation feed UNAVAILABLE, a valid token (or none) the entry does not admit
    /// PERMISSION_DENIED.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::MissingToken | Refusal::Invalid | Refusal::Expired | Refusal::Revoked => {
                ErrorCode::Unauthenticated
            }
            Refusal::RevocationsUnavailable => ErrorCode::Unavailable,
            Refusal::Internal | Refusal::WrongType { .. } | Refusal::Missing(_) => ErrorCode::PermissionDenied,
        }
    }
}

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Status {
        refusal.code().status(refusal.to_string())
    }
}

impl From<TokenError> for Refusal {
    fn from(error: TokenError) -> Refusal {
        match error {
            TokenError::Expired => Refusal::Expired,
            TokenError::Revoked => Refusal::Revoked,
            TokenError::RevocationsUnavailable => Refusal::RevocationsUnavailable,
            _ => Refusal::Invalid,
        }
    }
}

impl Access {
    /// Whether a call needs a verified token before it may go on.
    pub fn needs_token(self) -> bool {
        matches!(self, Access::AnyToken | Access::Token { .. })
    }

    /// Whether the holder of `claims` (already verified) may make the call.
    pub fn check(self, claims: &Claims) -> Result<(), Refusal> {
        match self {
            Access::Open | Access::AnyToken => Ok(()),
            Access::Internal => Err(Refusal::Internal),
            Access::Token { types, permission } => {
                if !types.contains(&claims.token_type) {
                    return Err(Refusal::WrongType { got: claims.token_type });
                }
                match permission {
                    Some(p) if !scope::allows(claims, p) => Err(Refusal::Missing(p)),
                    _ => Ok(()),
                }
            }
        }
    }
}

const fn token(types: &'static [TokenType], permission: Permission) -> Access {
    Access::Token {
        types,
        permission: Some(permission),
    }
}

const fn any_permission(types: &'static [TokenType]) -> Access {
    Access::Token {
        types,
        permission: None,
    }
}

/// One RPC: its full path (`/package.Service/Method`), who may call it, whether the
/// server answers with a stream (such calls are not cut by the unary deadline, and end
/// when the token that opened them does), and which internal services may call it
/// directly with their own credential instead of a token (never through the gateway,
/// which strips credentials).
#[derive(Debug, Clone, Copy)]
pub struct Rpc {
    pub path: &'static str,
    pub access: Access,
    pub server_streaming: bool,
    pub services: &'static [&'static str],
}

const fn unary(path: &'static str, access: Access) -> Rpc {
    Rpc {
        path,
        access,
        server_streaming: false,
        services: &[],
    }
}

const fn stream(path: &'static str, access: Access) -> Rpc {
    Rpc {
        path,
        access,
        server_streaming: true,
        services: &[],
    }
}

impl Rpc {
    /// This entry, also open to the internal `services` by their credential.
    const fn or_services(self, services: &'static [&'static str]) -> Rpc {
        Rpc { services, ..self }
    }
}

const READERS: &[TokenType] = &[User, Service, Deployment];

/// Every RPC of the auth, registry and deploy services.
pub const RPCS: &[Rpc] = &[
    // auth
    unary("/slipway.auth.v1.AuthService/Login", Access::Open),
    unary("/slipway.auth.v1.AuthService/WhoAmI", any_permission(&[User])),
    unary("/slipway.auth.v1.AuthService/GetJwks", Access::Open),
    unary(
        "/slipway.auth.v1.AuthService/RotateKeys",
        token(&[User], scope::KEYS_ROTATE),
    ),
    unary(
        "/slipway.auth.v1.AuthService/MintServiceToken",
        token(&[User], scope::TOKENS_MINT),
    ),
    unary(
        "/slipway.auth.v1.AuthService/MintConfigToken",
        token(&[User], scope::TOKENS_MINT),
    ),
    unary("/slipway.auth.v1.AuthService/MintDeploymentToken", Access::Internal).or_services(&[DEPLOY_SERVICE]),
    unary("/slipway.auth.v1.AuthService/AttenuateToken", Access::AnyToken),
    unary(
        "/slipway.auth.v1.AuthService/ListTokens",
        token(&[User], scope::TOKENS_READ),
    ),
    // The deploy service revokes the deployment tokens of finished runs.
    unary(
        "/slipway.auth.v1.AuthService/RevokeTokens",
        token(&[User], scope::TOKENS_REVOKE),
    )
    .or_services(&[DEPLOY_SERVICE]),
    unary("/slipway.auth.v1.AuthService/DebugToken", Access::Open),
    // Verifiers present their service credential directly to the auth service; through
    // the gateway, a token that may read tokens.
    stream(
        "/slipway.auth.v1.AuthService/WatchRevocations",
        token(&[User], scope::TOKENS_READ),
    )
    .or_services(&[DEPLOY_SERVICE, REGISTRY_SERVICE, GATEWAY]),
    unary(
        "/slipway.auth.v1.AuthService/CreateUser",
        token(&[User], scope::USERS_WRITE),
    ),
    unary(
        "/slipway.auth.v1.AuthService/ListUsers",
        token(&[User], scope::USERS_READ),
    ),
    unary("/slipway.auth.v1.AuthService/ChangePassword", any_permission(&[User])),
    unary(
        "/slipway.auth.v1.AuthService/DisableUser",
        token(&[User], scope::USERS_WRITE),
    ),
    unary(
        "/slipway.auth.v1.AuthService/EnableUser",
        token(&[User], scope::USERS_WRITE),
    ),
    unary(
        "/slipway.auth.v1.AuthService/DeleteUser",
        token(&[User], scope::USERS_WRITE),
    ),
    unary("/slipway.auth.v1.AuthService/ExchangeLegacyToken", Access::Open),
    // registry
    // The deploy service hides the deployments of services that are gone; the gateway
    // fills its services cache and re-reads the list when its watch reconnects.
    unary(
        "/slipway.registry.v1.RegistryService/ListServices",
        token(&[User], scope::SERVICES_READ),
    )
    .or_services(&[DEPLOY_SERVICE, GATEWAY]),
    unary(
        "/slipway.registry.v1.RegistryService/ListServiceNames",
        token(&[User], scope::SERVICES_READ),
    ),
    // The deploy service looks a service up when a deployment starts.
    unary(
        "/slipway.registry.v1.RegistryService/GetService",
        token(&[User], scope::SERVICES_READ),
    )
    .or_services(&[DEPLOY_SERVICE]),
    unary(
        "/slipway.registry.v1.RegistryService/SyncServices",
        token(&[User], scope::SERVICES_SYNC),
    ),
    unary(
        "/slipway.registry.v1.RegistryService/DeleteService",
        token(&[User], scope::SERVICES_DELETE),
    ),
    unary(
        "/slipway.registry.v1.RegistryService/PublishDeployedService",
        Access::Internal,
    )
    .or_services(&[DEPLOY_SERVICE]),
    unary(
        "/slipway.registry.v1.RegistryService/ListDeployedServices",
        token(&[Config, User], scope::DEPLOYED_SERVICES_READ),
    ),
    // The gateway follows it for its services cache and WebSocket hub.
    stream(
        "/slipway.registry.v1.RegistryService/WatchServices",
        token(&[User], scope::SERVICES_READ),
    )
    .or_services(&[GATEWAY]),
    // deploy
    unary(
        "/slipway.deploy.v1.DeployService/StartDeployment",
        token(&[Service, User], scope::DEPLOYMENTS_START),
    ),
    unary(
        "/slipway.deploy.v1.DeployService/ListDeployments",
        token(READERS, scope::DEPLOYMENTS_READ),
    ),
    unary(
        "/slipway.deploy.v1.DeployService/GetDeployment",
        token(READERS, scope::DEPLOYMENTS_READ),
    ),
    unary(
        "/slipway.deploy.v1.DeployService/ReportStep",
        token(&[Deployment], scope::STEPS_REPORT),
    ),
    unary(
        "/slipway.deploy.v1.DeployService/ListSteps",
        token(READERS, scope::DEPLOYMENTS_READ),
    ),
    unary(
        "/slipway.deploy.v1.DeployService/FinishDeployment",
        token(&[Deployment, User], scope::DEPLOYMENTS_FINISH),
    ),
    unary(
        "/slipway.deploy.v1.DeployService/CancelDeployment",
        token(&[User], scope::DEPLOYMENTS_CANCEL),
    ),
    // The gateway follows every event for its WebSocket hub (each socket filtered by
    // its own token).
    stream(
        "/slipway.deploy.v1.DeployService/WatchEvents",
        token(READERS, scope::DEPLOYMENTS_READ),
    )
    .or_services(&[GATEWAY]),
    // A run's output: whoever may read the deployment (the handler checks which).
    unary(
        "/slipway.deploy.v1.DeployService/GetDeploymentLog",
        token(READERS, scope::DEPLOYMENTS_READ),
    ),
    stream(
        "/slipway.deploy.v1.DeployService/WatchDeploymentLog",
        token(READERS, scope::DEPLOYMENTS_READ),
    ),
];

/// The entry of an RPC by its full path (`/slipway.auth.v1.AuthService/Login`).
pub fn rpc(path: &str) -> Option<&'static Rpc> {
    RPCS.iter().find(|r| r.path == path)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prost::Message;

    use super::*;
    use crate::token::testing::{claims, now};

    /// (full path, server streaming) of every RPC in the compiled contract.
    fn descriptor_rpcs() -> BTreeMap<String, bool> {
        let set = proto::wkt::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut rpcs = BTreeMap::new();
        for file in &set.file {
            let package = file.package.clone().unwrap_or_default();
            if !package.starts_with("slipway.") {
                continue;
            }
            for service in &file.service {
                for method in &service.method {
                    let path = format!(
                        "/{package}.{}/{}",
                        service.name.as_deref().unwrap_or_default(),
                        method.name.as_deref().unwrap_or_default()
                    );
                    rpcs.insert(path, method.server_streaming.unwrap_or(false));
                }
            }
        }
        rpcs
    }

    #[test]
    fn every_rpc_of_the_contract_has_exactly_one_entry() {
        let contract = descriptor_rpcs();
        assert!(contract.len() >= 30, "descriptor set read: {contract:?}");
        for (path, streaming) in &contract {
            let entries: Vec<_> = RPCS.iter().filter(|r| r.path == path).collect();
            assert_eq!(entries.len(), 1, "{path} needs exactly one scope-table entry");
            assert_eq!(entries[0].server_streaming, *streaming, "{path}: server streaming");
        }
        for entry in RPCS {
            assert!(
                contract.contains_key(entry.path),
                "{} is in the scope table but not an RPC of the contract",
                entry.path
            );
        }
    }

    #[test]
    fn open_and_internal_rpcs_are_exactly_these() {
        let with = |access: Access| -> Vec<&str> {
            RPCS.iter()
                .filter(|r| r.access == access)
                .map(|r| r.path.rsplit('/').next().unwrap())
                .collect()
        };
        assert_eq!(
            with(Access::Open),
            ["Login", "GetJwks", "DebugToken", "ExchangeLegacyToken"]
        );
        assert_eq!(
            with(Access::Internal),
            ["MintDeploymentToken", "PublishDeployedService"]
        );
        assert_eq!(with(Access::AnyToken), ["AttenuateToken"]);
    }

    #[test]
    fn internal_services_are_admitted_exactly_here() {
        let named: Vec<(&str, &[&str])> = RPCS
            .iter()
            .filter(|r| !r.services.is_empty())
            .map(|r| (r.path.rsplit('/').next().unwrap(), r.services))
            .collect();
        let deploy: &[&str] = &[DEPLOY_SERVICE];
        let gateway: &[&str] = &[GATEWAY];
        assert_eq!(
            named,
            [
                ("MintDeploymentToken", deploy),
                ("RevokeTokens", deploy),
                ("WatchRevocations", &[DEPLOY_SERVICE, REGISTRY_SERVICE, GATEWAY][..]),
                ("ListServices", &[DEPLOY_SERVICE, GATEWAY][..]),
                ("GetService", deploy),
                ("PublishDeployedService", deploy),
                ("WatchServices", gateway),
                ("WatchEvents", gateway),
            ]
        );
        // The gateway's own authority is read-only: lists and streams, nothing else.
        for rpc in RPCS.iter().filter(|r| r.services.contains(&GATEWAY)) {
            let method = rpc.path.rsplit('/').next().unwrap();
            assert!(method.starts_with("List") || method.starts_with("Watch"), "{method}");
        }
        // An internal entry with nobody named could never be called.
        for rpc in RPCS.iter().filter(|r| r.access == Access::Internal) {
            assert!(!rpc.services.is_empty(), "{}", rpc.path);
        }
    }

    #[test]
    fn every_named_type_can_hold_the_named_permission() {
        for rpc in RPCS {
            if let Access::Token {
                types,
                permission: Some(p),
            } = rpc.access
            {
                assert!(scope::is_known(p.as_str()), "{}: {p}", rpc.path);
                for t in types {
                    assert!(
                        scope::defaults(*t).contains(&p),
                        "{}: a {t} token never holds {p}",
                        rpc.path
                    );
                }
            }
        }
    }

    #[test]
    fn checks_type_then_permission() {
        let list = rpc("/slipway.registry.v1.RegistryService/ListServices").unwrap().access;
        let mut user = claims(now());
        user.token_type = TokenType::User;
        assert_eq!(list.check(&user), Ok(()));
        user.permissions = Some(vec![scope::DEPLOYMENTS_READ.into()]);
        assert_eq!(list.check(&user), Err(Refusal::Missing(scope::SERVICES_READ)));
        let mut service = claims(now());
        service.token_type = TokenType::Service;
        assert_eq!(
            list.check(&service),
            Err(Refusal::WrongType {
                got: TokenType::Service
            })
        );
        let start = rpc("/slipway.deploy.v1.DeployService/StartDeployment").unwrap().access;
        assert_eq!(start.check(&service), Ok(()));
        let publish = rpc("/slipway.registry.v1.RegistryService/PublishDeployedService").unwrap();
        assert_eq!(publish.access.check(&claims(now())), Err(Refusal::Internal));
        assert!(!publish.access.needs_token());
        assert!(rpc("/slipway.auth.v1.AuthService/Nope").is_none());
    }
}
