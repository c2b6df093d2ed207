//! Every RPC of the three backends, called directly (not through the gateway), against
//! the callers the scope table (`common::scope_table::RPCS`) admits and refuses: each
//! backend's authorization layer must refuse a caller the entry refuses, with the
//! refusal's code and message, and let one it admits through to the handler (which
//! may still answer anything but a refusal of the layer). The cases come from the
//! table; a few written out by hand keep the test from passing vacuously.

use tests::support;

use std::{collections::BTreeMap, net::SocketAddr};

use common::{
    identity::{Credential, DEPLOY_SERVICE, GATEWAY},
    scope::{self, Permission},
    scope_table::{Access, RPCS, Refusal},
    token::{Claims, TokenType},
};
use serde_json::json;
use support::write_service;
use tests::{Backend, Stack, grpc::channel, user_claims};
use tonic::{Code, Status};

#[tokio::test(flavor = "multi_thread")]
async fn every_rpc_called_directly_admits_and_refuses_as_its_entry_says() {
    every_rpc(Backend::Sqlite).await;
}

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Nobody,
    /// A valid token of this type with its type's default permissions.
    Token(TokenType),
    /// A user token holding every permission but this one.
    UserWithout(Permission),
    Expired,
    /// An internal service's own credential, no token.
    Service(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Past the layer: the handler answers, with anything but a refusal.
    Admitted,
    /// Refused by the layer with this code.
    Refused(Code),
}

const TYPES: [TokenType; 4] = [
    TokenType::User,
    TokenType::Service,
    TokenType::Deployment,
    TokenType::Config,
];

/// What the table says for `who` calling an RPC with `access` and these `services`.
fn from_table(access: Access, services: &[&str], who: Who) -> Expect {
    let refused = |refusal: Refusal| Expect::Refused(Status::from(refusal).code());
    let claims = |token_type: TokenType, permissions: Option<Vec<String>>| {
        let mut claims = user_claims("admin");
        claims.token_type = token_type;
        claims.permissions = permissions;
        claims
    };
    let check = |claims: Claims| match access.check(&claims) {
        Ok(()) => Expect::Admitted,
        Err(refusal) => refused(refusal),
    };
    match (access, who) {
        (_, Who::Service(name)) if services.contains(&name) => Expect::Admitted,
        (Access::Open, _) => Expect::Admitted,
        (Access::Internal, _) => refused(Refusal::Internal),
        (_, Who::Nobody | Who::Service(_)) => refused(Refusal::MissingToken),
        (_, Who::Expired) => refused(Refusal::Expired),
        (_, Who::Token(token_type)) => check(claims(token_type, None)),
        (_, Who::UserWithout(missing)) => {
            let rest = scope::ALL.iter().filter(|p| **p != missing).map(|p| p.to_string());
            check(claims(TokenType::User, Some(rest.collect())))
        }
    }
}

/// The callers tried on an entry: one of every token type, a user token without the
/// entry's permission, none, an expired one, and the internal services' credentials;
/// fewer on an open entry.
fn callers_of(access: Access) -> Vec<Who> {
    if access == Access::Open {
        // (Few: failed logins may be slowed down.)
        return vec![Who::Nobody, Who::Token(TokenType::User), Who::Expired];
    }
    let mut who: Vec<Who> = TYPES.iter().map(|t| Who::Token(*t)).collect();
    if let Access::Token {
        permission: Some(p), ..
    } = access
    {
        who.push(Who::UserWithout(p));
    }
    who.extend([
        Who::Nobody,
        Who::Expired,
        Who::Service(DEPLOY_SERVICE),
        Who::Service(GATEWAY),
    ]);
    who
}

/// Written out by hand: (method, caller, outcome).
fn by_hand() -> Vec<(&'static str, Who, Expect)> {
    use Expect::{Admitted, Refused};
    vec![
        (
            "/slipway.deploy.v1.DeployService/ReportStep",
            Who::Token(TokenType::User),
            Refused(Code::PermissionDenied),
        ),
        (
            "/slipway.deploy.v1.DeployService/ReportStep",
            Who::Token(TokenType::Deployment),
            Admitted,
        ),
        (
            "/slipway.deploy.v1.DeployService/StartDeployment",
            Who::Token(TokenType::Config),
            Refused(Code::PermissionDenied),
        ),
        (
            "/slipway.deploy.v1.DeployService/WatchEvents",
            Who::Token(TokenType::Service),
            Admitted,
        ),
        (
            "/slipway.deploy.v1.DeployService/ListDeployments",
            Who::Nobody,
            Refused(Code::Unauthenticated),
        ),
        (
            "/slipway.registry.v1.RegistryService/ListDeployedServices",
            Who::Token(TokenType::Config),
            Admitted,
        ),
        (
            "/slipway.registry.v1.RegistryService/ListServices",
            Who::UserWithout(scope::SERVICES_READ),
            Refused(Code::PermissionDenied),
        ),
        (
            "/slipway.registry.v1.RegistryService/GetService",
            Who::Service(DEPLOY_SERVICE),
            Admitted,
        ),
        // The gateway's own credential reads what its services cache and WebSocket
        // hub follow, and nothing else: elsewhere it counts as no token.
        (
            "/slipway.registry.v1.RegistryService/ListServices",
            Who::Service(GATEWAY),
            Admitted,
        ),
        (
            "/slipway.registry.v1.RegistryService/WatchServices",
            Who::Service(GATEWAY),
            Admitted,
        ),
        (
            "/slipway.deploy.v1.DeployService/WatchEvents",
            Who::Service(GATEWAY),
            Admitted,
        ),
        (
            "/slipway.registry.v1.RegistryService/GetService",
            Who::Service(GATEWAY),
            Refused(Code::Unauthenticated),
        ),
        (
            "/slipway.registry.v1.RegistryService/SyncServices",
            Who::Service(GATEWAY),
            Refused(Code::Unauthenticated),
        ),
        (
            "/slipway.registry.v1.RegistryService/PublishDeployedService",
            Who::Service(GATEWAY),
            Refused(Code::PermissionDenied),
        ),
        (
            "/slipway.deploy.v1.DeployService/ListDeployments",
            Who::Service(GATEWAY),
            Refused(Code::Unauthenticated),
        ),
        (
            "/slipway.deploy.v1.DeployService/CancelDeployment",
            Who::Service(GATEWAY),
            Refused(Code::Unauthenticated),
        ),
        (
            "/slipway.auth.v1.AuthService/MintServiceToken",
            Who::Service(GATEWAY),
            Refused(Code::Unauthenticated),
        ),
        // Nor the deploy service's where the table does not name it.
        (
            "/slipway.registry.v1.RegistryService/SyncServices",
            Who::Service(DEPLOY_SERVICE),
            Refused(Code::Unauthenticated),
        ),
        (
            "/slipway.registry.v1.RegistryService/PublishDeployedService",
            Who::Token(TokenType::User),
            Refused(Code::PermissionDenied),
        ),
        (
            "/slipway.registry.v1.RegistryService/PublishDeployedService",
            Who::Service(DEPLOY_SERVICE),
            Admitted,
        ),
        (
            "/slipway.auth.v1.AuthService/MintServiceToken",
            Who::Token(TokenType::Service),
            Refused(Code::PermissionDenied),
        ),
        (
            "/slipway.auth.v1.AuthService/MintDeploymentToken",
            Who::Nobody,
            Refused(Code::PermissionDenied),
        ),
        (
            "/slipway.auth.v1.AuthService/WatchRevocations",
            Who::Service(GATEWAY),
            Admitted,
        ),
        (
            "/slipway.auth.v1.AuthService/WatchRevocations",
            Who::Expired,
            Refused(Code::Unauthenticated),
        ),
        (
            "/slipway.auth.v1.AuthService/AttenuateToken",
            Who::Token(TokenType::Deployment),
            Admitted,
        ),
        (
            "/slipway.auth.v1.AuthService/ListUsers",
            Who::UserWithout(scope::USERS_READ),
            Refused(Code::PermissionDenied),
        ),
        (
            "/slipway.auth.v1.AuthService/ListUsers",
            Who::Token(TokenType::Service),
            Refused(Code::PermissionDenied),
        ),
        (
            "/slipway.auth.v1.AuthService/ListUsers",
            Who::Token(TokenType::User),
            Admitted,
        ),
        ("/slipway.auth.v1.AuthService/Login", Who::Nobody, Admitted),
        ("/slipway.auth.v1.AuthService/GetJwks", Who::Expired, Admitted),
        (
            "/slipway.auth.v1.AuthService/NoSuchMethod",
            Who::Token(TokenType::User),
            Refused(Code::Unimplemented),
        ),
    ]
}

struct Callers {
    tokens: Vec<(Who, String)>,
    credentials: BTreeMap<&'static str, Credential>,
}

impl Callers {
    fn new(stack: &Stack) -> Callers {
        let now = chrono::Utc::now().timestamp();
        let mut tokens = Vec::new();
        for token_type in TYPES {
            let mut claims = user_claims("admin");
            claims.token_type = token_type;
            match token_type {
                TokenType::Service => claims.service = Some("alpha".into()),
                // A run that does not exist: what it may do changes nothing.
                TokenType::Deployment => {
                    claims.service = Some("alpha".into());
                    claims.deployment = Some(999_999);
                }
                _ => {}
            }
            tokens.push((Who::Token(token_type), stack.sign_with_real_key(&claims)));
        }
        for rpc in RPCS {
            if let Access::Token {
                permission: Some(p), ..
            } = rpc.access
            {
                let mut claims = user_claims("admin");
                claims.permissions = Some(scope::ALL.iter().filter(|q| **q != p).map(|q| q.to_string()).collect());
                tokens.push((Who::UserWithout(p), stack.sign_with_real_key(&claims)));
            }
        }
        let mut expired = user_claims("admin");
        (expired.iat, expired.nbf, expired.exp) = (now - 700, now - 700, now - 100);
        tokens.push((Who::Expired, stack.sign_with_real_key(&expired)));
        let credentials = [(DEPLOY_SERVICE, "deploy-service.key"), (GATEWAY, "gateway.key")]
            .map(|(name, file)| (name, Credential::load(name, &stack.dir.path().join(file)).unwrap()))
            .into();
        Callers { tokens, credentials }
    }

    fn request(&self, who: Who) -> tonic::Request<()> {
        let mut request = tonic::Request::new(());
        match who {
            Who::Nobody => {}
            Who::Service(name) => self.credentials[name].attach(request.metadata_mut()),
            token => {
                let (_, text) = self.tokens.iter().find(|(w, _)| *w == token).unwrap();
                let value = format!("Bearer {text}").parse().unwrap();
                request.metadata_mut().insert("authorization", value);
            }
        }
        request
    }
}

/// The backend serving `path`.
fn backend(stack: &Stack, path: &str) -> SocketAddr {
    match path.trim_start_matches('/').split('/').next().unwrap() {
        "slipway.auth.v1.AuthService" => stack.auth,
        "slipway.registry.v1.RegistryService" => stack.registry,
        "slipway.deploy.v1.DeployService" => stack.deploy,
        other => panic!("no backend serves {other}"),
    }
}

/// Calls `path` with an empty request message; the status it failed with, if any.
async fn call(addr: SocketAddr, path: &str, streaming: bool, request: tonic::Request<()>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel(addr).await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path = path.parse::<tonic::codegen::http::uri::PathAndQuery>().unwrap();
    if streaming {
        // The stream opened: past the layer (dropped at once).
        grpc.server_streaming(request, path, codec).await.map(drop)
    } else {
        grpc.unary(request, path, codec).await.map(drop)
    }
}

/// Every message the layer refuses with.
fn refusal_messages() -> Vec<String> {
    let mut refusals = vec![
        Refusal::MissingToken,
        Refusal::Invalid,
        Refusal::Expired,
        Refusal::Revoked,
        Refusal::RevocationsUnavailable,
        Refusal::Internal,
    ];
    refusals.extend(TYPES.map(|got| Refusal::WrongType { got }));
    refusals.extend(scope::ALL.iter().copied().map(Refusal::Missing));
    refusals.iter().map(ToString::to_string).collect()
}

async fn every_rpc(backend_kind: Backend) {
    let stack = Stack::start_with(backend_kind, |dir| {
        write_service(
            dir,
            "alpha",
            json!({"steps": [{"name": "build"}]}),
            "#!/bin/sh\nexit 0\n",
        );
    })
    .await;
    let callers = Callers::new(&stack);
    let refusals = refusal_messages();

    let mut cases: Vec<(&str, bool, Who, Expect)> = Vec::new();
    for rpc in RPCS {
        for who in callers_of(rpc.access) {
            cases.push((
                rpc.path,
                rpc.server_streaming,
                who,
                from_table(rpc.access, rpc.services, who),
            ));
        }
    }
    for (path, who, expect) in by_hand() {
        let rpc = RPCS.iter().find(|r| r.path == path);
        if let Some(rpc) = rpc {
            assert_eq!(
                from_table(rpc.access, rpc.services, who),
                expect,
                "{path} with {who:?}: the table and the hand-written case disagree"
            );
        }
        cases.push((path, rpc.is_some_and(|r| r.server_streaming), who, expect));
    }
    // Rotating the signing key last: the tokens above stay signed by the old one.
    cases.sort_by_key(|(path, ..)| path.ends_with("/RotateKeys"));

    let (mut admitted, mut refused) = (0, 0);
    for (path, streaming, who, expect) in &cases {
        let what = format!("{path} with {who:?}");
        let outcome = call(backend(&stack, path), path, *streaming, callers.request(*who)).await;
        match (expect, outcome) {
            (Expect::Admitted, Ok(())) => admitted += 1,
            (Expect::Admitted, Err(status)) => {
                assert!(
                    !refusals.contains(&status.message().to_owned()),
                    "{what}: admitted by the table, refused: {status:?}\n{}",
                    stack.logs()
                );
                admitted += 1;
            }
            (Expect::Refused(code), Err(status)) => {
                assert_eq!(status.code(), *code, "{what}: {status:?}");
                if *code != Code::Unimplemented {
                    assert!(refusals.contains(&status.message().to_owned()), "{what}: {status:?}");
                }
                refused += 1;
            }
            (Expect::Refused(code), Ok(())) => panic!("{what}: refused by the table ({code:?}), admitted"),
        }
    }
    // Every entry was tried, with callers on both sides of every token entry.
    assert!(RPCS.len() >= 30, "{}", RPCS.len());
    for rpc in RPCS {
        let tried = |e: Expect| cases.iter().any(|(p, _, _, x)| *p == rpc.path && *x == e);
        assert!(tried(Expect::Admitted), "{}: nobody admitted", rpc.path);
        assert_eq!(
            tried(Expect::Refused(Code::PermissionDenied)) || tried(Expect::Refused(Code::Unauthenticated)),
            rpc.access != Access::Open,
            "{}",
            rpc.path
        );
    }
    println!(
        "rpc authorization: {} RPCs, {} cases: {admitted} admitted, {refused} refused",
        RPCS.len(),
        cases.len()
    );
    assert_eq!(admitted + refused, cases.len());
}
