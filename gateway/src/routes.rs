//! The route table: every HTTP route of the gateway, once. Each entry names its method,
//! path, handler, the RPC it is the HTTP form of, who may call it, where its token comes
//! from, its OpenAPI summary and bodies, and what the layers around it must know (a
//! JSON body decoded before the scope check, a write that empties the services cache).
//!
//! Everything else is derived from [`ROUTES`]: the axum router ([`router`]), the
//! interceptor's scope check ([`entry`]), the OpenAPI document (`openapi`), the
//! trailing-slash redirects ([`redirects_to`]) and the services cache's write set
//! ([`writes_services`]). Unit tests below keep the table well formed.
//!
//! A `/v1` route that is the HTTP form of an RPC names it with [`Route::rpc`] and takes
//! its access rule from the RPC's entry in `common::scope_table::RPCS` (at compile time:
//! a misspelt RPC does not build). fastDeploy routes keep fastDeploy's own rules.

use axum::routing::{MethodFilter, MethodRouter, any, on};
use common::{
    scope::{
        DEPLOYED_SERVICES_READ, DEPLOYMENTS_FINISH, DEPLOYMENTS_READ, DEPLOYMENTS_START, SERVICES_DELETE,
        SERVICES_READ, SERVICES_SYNC, STEPS_REPORT, TOKENS_MINT,
    },
    scope_table::{Access, RPCS},
    token::TokenType::{self, Config, Deployment, Service, User},
};

use crate::{
    fastdeploy::{deployments, service_token, services, users, websocket},
    server::{self, AppState, method_not_allowed},
    v1,
};

/// Where a route's token comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The `Authorization: Bearer` header, checked by the gateway's interceptor before
    /// the handler runs.
    Header,
    /// The first message of a WebSocket (fastDeploy's protocol): the upgrade itself is
    /// open and the socket checks the token it receives against the same entry.
    FirstMessage,
}

/// What a request or response body is, for the OpenAPI document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    /// A proto message (full name without the leading dot), in proto3 JSON.
    Proto(&'static str),
    /// A schema of fastDeploy's contract, by component name.
    Contract(&'static str),
    /// A stream of proto messages, one proto3 JSON object per line
    /// (`application/x-ndjson`, see `v1::streams`).
    ProtoStream(&'static str),
}

/// Builds a route's method router for the method it is declared with.
pub type Handler = fn(MethodFilter) -> MethodRouter<AppState>;

/// One HTTP route of the gateway. fastDeploy routes answer a refusal with 401 (its
/// rule), `/v1` routes with 403 for a valid token; `access` says who gets through.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    /// The axum path template (`{name}` matches one segment).
    pub path: &'static str,
    pub handler: Handler,
    /// The RPC this route serves over HTTP (`/package.Service/Method`): its access rule
    /// is the RPC's and its bodies are the RPC's messages. fastDeploy routes, which keep
    /// fastDeploy's own rules and bodies, name none.
    pub rpc: Option<&'static str>,
    pub access: Access,
    pub credential: Credential,
    pub summary: &'static str,
    pub request: Body,
    pub response: Body,
    /// fastDeploy routes with a JSON body: FastAPI decodes it before authenticating
    /// (contract 1.2); Slipway verifies the token first (an unauthenticated body is
    /// never read), then, as FastAPI, a body that is not JSON is 422 before the token's
    /// type and permissions are checked. The handler takes it as `interceptor::JsonBody`.
    pub json_before_scope: bool,
    /// The route changes the services list: the services cache is emptied once the
    /// backend has answered.
    pub writes_services: bool,
}

impl Route {
    /// Who may call it: a valid token of one of `types` holding `permission`.
    const fn token(mut self, types: &'static [TokenType], permission: &'static str) -> Self {
        self.access = Access::Token {
            types,
            permission: Some(permission),
        };
        self
    }

    /// Who may call it: a valid user token, whatever its permissions.
    const fn user(mut self) -> Self {
        self.access = Access::Token {
            types: &[User],
            permission: None,
        };
        self
    }

    /// Anyone, without a token.
    const fn open(mut self) -> Self {
        self.access = Access::Open;
        self
    }

    /// The RPC this route serves over HTTP; the route admits whom the RPC admits.
    const fn rpc(mut self, path: &'static str) -> Self {
        self.rpc = Some(path);
        self.access = rpc_access(path);
        self
    }

    /// The OpenAPI summary and the request and response bodies.
    const fn doc(mut self, summary: &'static str, request: Body, response: Body) -> Self {
        self.summary = summary;
        self.request = request;
        self.response = response;
        self
    }

    const fn json_before_scope(mut self) -> Self {
        self.json_before_scope = true;
        self
    }

    const fn writes_services(mut self) -> Self {
        self.writes_services = true;
        self
    }

    /// The method filter of `method`.
    fn filter(&self) -> Option<MethodFilter> {
        Some(match self.method {
            "GET" => MethodFilter::GET,
            "POST" => MethodFilter::POST,
            "PUT" => MethodFilter::PUT,
            "DELETE" => MethodFilter::DELETE,
            "PATCH" => MethodFilter::PATCH,
            _ => return None,
        })
    }
}

/// A route nobody may call until its builder says who may (`Internal` is refused to
/// everyone; a test keeps every entry from staying so).
const fn route(method: &'static str, path: &'static str, handler: Handler) -> Route {
    Route {
        method,
        path,
        handler,
        rpc: None,
        access: Access::Internal,
        credential: Credential::Header,
        summary: "",
        request: Body::None,
        response: Body::None,
        json_before_scope: false,
        writes_services: false,
    }
}

const fn get(path: &'static str, handler: Handler) -> Route {
    route("GET", path, handler)
}

const fn post(path: &'static str, handler: Handler) -> Route {
    route("POST", path, handler)
}

const fn put(path: &'static str, handler: Handler) -> Route {
    route("PUT", path, handler)
}

const fn delete(path: &'static str, handler: Handler) -> Route {
    route("DELETE", path, handler)
}

/// fastDeploy's WebSocket: a GET upgrade whose token comes as the first message. The
/// handler answers every method (a plain request is 404, as in fastDeploy).
const fn websocket(path: &'static str, handler: Handler) -> Route {
    let mut route = route("GET", path, handler);
    route.credential = Credential::FirstMessage;
    route
}

/// The access rule of an RPC in the scope table, at compile time.
const fn rpc_access(path: &str) -> Access {
    let mut i = 0;
    while i < RPCS.len() {
        if same(RPCS[i].path.as_bytes(), path.as_bytes()) {
            return RPCS[i].access;
        }
        i += 1;
    }
    panic!("not an RPC of the scope table")
}

const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

use Body::{Contract, None as NoBody, Proto, ProtoStream};

/// Every HTTP route of the gateway. A new route is one entry here (and its handler).
pub const ROUTES: &[Route] = &[
    // built-ins
    get("/healthz", |m| on(m, server::healthz))
        .open()
        .doc("Liveness of the gateway", NoBody, NoBody),
    get("/readyz", |m| on(m, server::readyz)).open().doc(
        "Readiness: every backend and the revocation feed",
        NoBody,
        Contract("Detail"),
    ),
    get("/.well-known/jwks.json", |m| on(m, server::jwks))
        .rpc("/slipway.auth.v1.AuthService/GetJwks")
        .doc(
            "Public keys that verify Slipway tokens",
            NoBody,
            Proto("slipway.auth.v1.Jwks"),
        ),
    get("/metrics", |m| on(m, crate::metrics::render))
        .open()
        .doc("Prometheus metrics", NoBody, NoBody),
    get("/openapi.json", |m| on(m, crate::openapi::serve))
        .open()
        .doc("This document", NoBody, NoBody),
    // fastDeploy (reference/fastdeploy-contract.md section 2)
    post("/token", |m| on(m, users::login)).open().doc(
        "Log in with a form (username, password)",
        Contract("LoginForm"),
        Contract("AccessToken"),
    ),
    get("/users/me", |m| on(m, users::me))
        .user()
        .doc("The user behind a user token", NoBody, Contract("User")),
    post("/service-token", |m| on(m, service_token::mint))
        .token(&[User], TOKENS_MINT)
        .json_before_scope()
        .doc(
            "Mint a service token for an existing service",
            Contract("ServiceTokenRequest"),
            Contract("ServiceToken"),
        ),
    get("/services/", |m| on(m, services::list))
        .token(&[User], SERVICES_READ)
        .doc("Every synced service", NoBody, Contract("Services")),
    get("/services/names/", |m| on(m, services::names))
        .token(&[User], SERVICES_READ)
        .doc("Folder names in the services directory", NoBody, Contract("Names")),
    post("/services/sync", |m| on(m, services::sync))
        .token(&[User], SERVICES_SYNC)
        .writes_services()
        .doc("Sync services from the services directory", NoBody, Contract("Detail")),
    delete("/services/{service_id}", |m| on(m, services::delete))
        .token(&[User], SERVICES_DELETE)
        .writes_services()
        .doc("Delete a service", NoBody, Contract("Detail")),
    get("/deployments/", |m| on(m, deployments::list))
        .token(&[User], DEPLOYMENTS_READ)
        .doc("Every deployment", NoBody, Contract("Deployments")),
    post("/deployments/", |m| on(m, deployments::start))
        .token(&[Service], DEPLOYMENTS_START)
        .json_before_scope()
        .doc(
            "Start a deployment of the service token's service",
            Contract("StartDeploymentBody"),
            Contract("StartedDeployment"),
        ),
    get("/deployments/{deployment_id}", |m| on(m, deployments::get))
        .token(&[Service], DEPLOYMENTS_READ)
        .doc(
            "A deployment with its steps (service token of its service)",
            NoBody,
            Contract("DeploymentWithSteps"),
        ),
    put("/deployments/finish/", |m| on(m, deployments::finish))
        .token(&[Deployment], DEPLOYMENTS_FINISH)
        .doc("Finish the deployment token's deployment", NoBody, Contract("Detail")),
    post("/steps/", |m| on(m, deployments::report_step))
        .token(&[Deployment], STEPS_REPORT)
        .json_before_scope()
        .doc(
            "Report a step of the deployment token's deployment",
            Contract("StepReport"),
            Contract("Detail"),
        ),
    get("/steps/", |m| on(m, deployments::list_steps))
        .token(&[User], DEPLOYMENTS_READ)
        .doc("Steps of a deployment (?deployment_id=)", NoBody, Contract("Steps")),
    // The user token comes as the socket's first message; each frame then needs the
    // permission of what it carries (services:read, deployments:read).
    websocket(websocket::PATH, |_| any(websocket::upgrade)).user().doc(
        "WebSocket live feed (authenticate with a first message)",
        NoBody,
        NoBody,
    ),
    get("/deployed-services/", |m| on(m, services::deployed))
        .token(&[Config], DEPLOYED_SERVICES_READ)
        .doc("Deployed-service configs (config token)", NoBody, Contract("DeployedServices")),
    // /v1: tokens, users, keys
    get("/v1/tokens", |m| on(m, v1::tokens::list))
        .rpc("/slipway.auth.v1.AuthService/ListTokens")
        .doc(
            "List tokens, newest first (?service=&type=&created_by=&include_revoked=&page_size=&page_token=)",
            NoBody,
            Proto("slipway.auth.v1.ListTokensResponse"),
        ),
    post("/v1/tokens", |m| on(m, v1::tokens::mint_config))
        .rpc("/slipway.auth.v1.AuthService/MintConfigToken")
        .doc(
            "Mint a config token",
            Proto("slipway.auth.v1.MintConfigTokenRequest"),
            Proto("slipway.auth.v1.MintedToken"),
        ),
    post("/v1/tokens/service", |m| on(m, v1::tokens::mint_service))
        .rpc("/slipway.auth.v1.AuthService/MintServiceToken")
        .doc(
            "Mint a service token",
            Proto("slipway.auth.v1.MintServiceTokenRequest"),
            Proto("slipway.auth.v1.MintedToken"),
        ),
    post("/v1/tokens/attenuate", |m| on(m, v1::tokens::attenuate))
        .rpc("/slipway.auth.v1.AuthService/AttenuateToken")
        .doc(
            "Derive a narrower token from the presented one",
            Proto("slipway.auth.v1.AttenuateTokenRequest"),
            Proto("slipway.auth.v1.MintedToken"),
        ),
    post("/v1/tokens/debug", |m| on(m, v1::tokens::debug))
        .rpc("/slipway.auth.v1.AuthService/DebugToken")
        .doc(
            "Decode a token and say whether it is valid now",
            Proto("slipway.auth.v1.DebugTokenRequest"),
            Proto("slipway.auth.v1.DebugTokenResponse"),
        ),
    post("/v1/tokens/exchange", |m| on(m, v1::tokens::exchange_legacy))
        .rpc("/slipway.auth.v1.AuthService/ExchangeLegacyToken")
        .doc(
            "Exchange a fastDeploy user token for a short-lived Slipway token (when legacy tokens are on)",
            Proto("slipway.auth.v1.ExchangeLegacyTokenRequest"),
            Proto("slipway.auth.v1.MintedToken"),
        ),
    delete("/v1/tokens/{id}", |m| on(m, v1::tokens::revoke))
        .rpc("/slipway.auth.v1.AuthService/RevokeTokens")
        .doc(
            "Revoke a token and every token derived from it",
            NoBody,
            Proto("slipway.auth.v1.RevokeTokensResponse"),
        ),
    post("/v1/users/me/password", |m| on(m, v1::users::change_password))
        .rpc("/slipway.auth.v1.AuthService/ChangePassword")
        .doc(
            "Change the caller's password; revokes their tokens",
            Proto("slipway.auth.v1.ChangePasswordRequest"),
            Proto("slipway.auth.v1.ChangePasswordResponse"),
        ),
    post("/v1/login", |m| on(m, v1::users::login))
        .rpc("/slipway.auth.v1.AuthService/Login")
        .doc(
            "Log in with JSON; answers a user token",
            Proto("slipway.auth.v1.LoginRequest"),
            Proto("slipway.auth.v1.LoginResponse"),
        ),
    get("/v1/users/me", |m| on(m, v1::users::who_am_i))
        .rpc("/slipway.auth.v1.AuthService/WhoAmI")
        .doc("The user behind a user token", NoBody, Proto("slipway.auth.v1.User")),
    post("/v1/users", |m| on(m, v1::users::create))
        .rpc("/slipway.auth.v1.AuthService/CreateUser")
        .doc(
            "Create a user",
            Proto("slipway.auth.v1.CreateUserRequest"),
            Proto("slipway.auth.v1.User"),
        ),
    post("/v1/users/{name}/disable", |m| on(m, v1::users::disable))
        .rpc("/slipway.auth.v1.AuthService/DisableUser")
        .doc(
            "Disable a user (not yourself): logins refused, every token they hold or minted revoked",
            NoBody,
            Proto("slipway.auth.v1.DisableUserResponse"),
        ),
    post("/v1/users/{name}/enable", |m| on(m, v1::users::enable))
        .rpc("/slipway.auth.v1.AuthService/EnableUser")
        .doc("Let a disabled user log in again", NoBody, Proto("slipway.auth.v1.User")),
    delete("/v1/users/{name}", |m| on(m, v1::users::delete))
        .rpc("/slipway.auth.v1.AuthService/DeleteUser")
        .doc(
            "Delete a user (not yourself) and revoke every token they hold or minted",
            NoBody,
            Proto("slipway.auth.v1.DeleteUserResponse"),
        ),
    post("/v1/keys/rotate", |m| on(m, v1::tokens::rotate_keys))
        .rpc("/slipway.auth.v1.AuthService/RotateKeys")
        .doc(
            "Start signing with a new key",
            NoBody,
            Proto("slipway.auth.v1.RotateKeysResponse"),
        ),
    // /v1: services
    get("/v1/services", |m| on(m, v1::services::list))
        .rpc("/slipway.registry.v1.RegistryService/ListServices")
        .doc(
            "List services (?page_size=&page_token=)",
            NoBody,
            Proto("slipway.registry.v1.ListServicesResponse"),
        ),
    post("/v1/services/sync", |m| on(m, v1::services::sync))
        .rpc("/slipway.registry.v1.RegistryService/SyncServices")
        .writes_services()
        .doc(
            "Sync services; problems reported per service",
            NoBody,
            Proto("slipway.registry.v1.SyncServicesResponse"),
        ),
    get("/v1/services/{id}", |m| on(m, v1::services::get_by_id))
        .rpc("/slipway.registry.v1.RegistryService/GetService")
        .doc("A synced service by id", NoBody, Proto("slipway.registry.v1.Service")),
    delete("/v1/services/{id}", |m| on(m, v1::services::delete))
        .rpc("/slipway.registry.v1.RegistryService/DeleteService")
        .writes_services()
        .doc(
            "Delete a service",
            NoBody,
            Proto("slipway.registry.v1.DeleteServiceResponse"),
        ),
    get("/v1/services/by-name/{name}", |m| on(m, v1::services::get_by_name))
        .rpc("/slipway.registry.v1.RegistryService/GetService")
        .doc("A synced service by name", NoBody, Proto("slipway.registry.v1.Service")),
    get("/v1/service-names", |m| on(m, v1::services::names))
        .rpc("/slipway.registry.v1.RegistryService/ListServiceNames")
        .doc(
            "Folder names in the services directory, synced or not",
            NoBody,
            Proto("slipway.registry.v1.ListServiceNamesResponse"),
        ),
    get("/v1/services/watch", |m| on(m, v1::streams::watch_services))
        .rpc("/slipway.registry.v1.RegistryService/WatchServices")
        .doc(
            "Stream of service changes (NDJSON, one ServiceEvent per line)",
            NoBody,
            ProtoStream("slipway.registry.v1.ServiceEvent"),
        ),
    get("/v1/deployed-services", |m| on(m, v1::services::deployed))
        .rpc("/slipway.registry.v1.RegistryService/ListDeployedServices")
        .doc(
            "Deployed-service configs the token may read",
            NoBody,
            Proto("slipway.registry.v1.ListDeployedServicesResponse"),
        ),
    // /v1: deployments and steps
    get("/v1/deployments", |m| on(m, v1::deployments::list))
        .rpc("/slipway.deploy.v1.DeployService/ListDeployments")
        .doc(
            "List deployments (?service=&page_size=&page_token=&include_removed_services=)",
            NoBody,
            Proto("slipway.deploy.v1.ListDeploymentsResponse"),
        ),
    post("/v1/deployments", |m| on(m, v1::deployments::start))
        .rpc("/slipway.deploy.v1.DeployService/StartDeployment")
        .doc(
            "Start a deployment",
            Proto("slipway.deploy.v1.StartDeploymentRequest"),
            Proto("slipway.deploy.v1.Deployment"),
        ),
    get("/v1/deployments/{id}", |m| on(m, v1::deployments::get))
        .rpc("/slipway.deploy.v1.DeployService/GetDeployment")
        .doc(
            "A deployment with its steps and status",
            NoBody,
            Proto("slipway.deploy.v1.Deployment"),
        ),
    get("/v1/deployments/{id}/steps", |m| on(m, v1::deployments::list_steps))
        .rpc("/slipway.deploy.v1.DeployService/ListSteps")
        .doc(
            "Steps of a deployment",
            NoBody,
            Proto("slipway.deploy.v1.ListStepsResponse"),
        ),
    post("/v1/deployments/{id}/finish", |m| on(m, v1::deployments::finish))
        .rpc("/slipway.deploy.v1.DeployService/FinishDeployment")
        .doc("Finish a deployment", NoBody, Proto("slipway.deploy.v1.Deployment")),
    post("/v1/deployments/{id}/cancel", |m| on(m, v1::deployments::cancel))
        .rpc("/slipway.deploy.v1.DeployService/CancelDeployment")
        .doc(
            "Cancel a deployment (kills its script)",
            NoBody,
            Proto("slipway.deploy.v1.Deployment"),
        ),
    post("/v1/steps", |m| on(m, v1::deployments::report_step))
        .rpc("/slipway.deploy.v1.DeployService/ReportStep")
        .doc(
            "Report a step (deployment token)",
            Proto("slipway.deploy.v1.ReportStepRequest"),
            Proto("slipway.deploy.v1.Step"),
        ),
    get("/v1/deployments/watch", |m| on(m, v1::streams::watch_deployments))
        .rpc("/slipway.deploy.v1.DeployService/WatchEvents")
        .doc(
            "Stream of deployment and step events (NDJSON, one Event per line; ?service=&deployment_id=&after_sequence=)",
            NoBody,
            ProtoStream("slipway.deploy.v1.Event"),
        ),
    // /v1: the revocation feed
    get("/v1/revocations/watch", |m| on(m, v1::streams::watch_revocations))
        .rpc("/slipway.auth.v1.AuthService/WatchRevocations")
        .doc(
            "Stream of revoked token ids (NDJSON, one RevocationEvent per line; ?after_sequence=); 429 past the auth service's caps on open feeds",
            NoBody,
            ProtoStream("slipway.auth.v1.RevocationEvent"),
        ),
];

/// The router of every route in the table: per path, each entry's handler for its
/// method, and 405 for any other method (HEAD is served by GET's handler). The
/// WebSocket answers every method itself.
pub fn router() -> axum::Router<AppState> {
    let mut router = axum::Router::new();
    for (i, first) in ROUTES.iter().enumerate() {
        let path = first.path;
        if ROUTES[..i].iter().any(|r| r.path == path) {
            continue;
        }
        let mut methods = MethodRouter::new();
        let mut websocket = false;
        for route in routes_at(path) {
            if route.credential == Credential::FirstMessage {
                websocket = true;
                methods = (route.handler)(MethodFilter::GET);
            } else if let Some(filter) = route.filter() {
                methods = methods.merge((route.handler)(filter));
            }
        }
        if !websocket {
            methods = methods.fallback(method_not_allowed);
        }
        router = router.route(path, methods);
    }
    router
}

/// Whether `path` fits `template`, segment by segment (`{name}` matches one non-empty
/// segment).
pub fn path_matches(template: &str, path: &str) -> bool {
    let (mut t, mut p) = (template.split('/'), path.split('/'));
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(ts), Some(ps)) if ts.starts_with('{') && ts.ends_with('}') && !ps.is_empty() => {}
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return false,
        }
    }
}

/// The entries of a path template (as the router declares it), one per method.
pub fn routes_at(template: &str) -> impl Iterator<Item = &'static Route> + '_ {
    ROUTES.iter().filter(move |r| r.path == template)
}

/// The entry of a request by method and concrete path. A literal template wins over one
/// with a placeholder (`/deployments/finish/` before `/deployments/{deployment_id}`).
pub fn route_of(method: &str, path: &str) -> Option<&'static Route> {
    let mut matching = ROUTES
        .iter()
        .filter(|r| r.method.eq_ignore_ascii_case(method) && path_matches(r.path, path));
    let first = matching.next()?;
    Some(
        std::iter::once(first)
            .chain(matching)
            .find(|r| r.path == path)
            .unwrap_or(first),
    )
}

/// What the table says of a request at a path template.
#[derive(Debug, Clone, Copy)]
pub enum Lookup {
    /// The entry of the request's method (HEAD is GET).
    Found(&'static Route),
    /// The path has entries, none for this method: the route's fallback answers 405.
    OtherMethod,
    /// The path has no entry at all.
    Unknown,
}

/// The interceptor's entry for a request at `template` (the router's matched path).
pub fn entry(method: &axum::http::Method, template: &str) -> Lookup {
    let method = if method == axum::http::Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    let mut lookup = Lookup::Unknown;
    for route in routes_at(template) {
        if route.method == method {
            return Lookup::Found(route);
        }
        lookup = Lookup::OtherMethod;
    }
    lookup
}

/// fastDeploy's trailing-slash redirects (contract 1.3): whether a request for `path`
/// that missed every route is redirected (307) to `toggled`, the same path with its
/// trailing slash added or removed. Every route's path is a target but the WebSocket's.
pub fn redirects_to(toggled: &str) -> bool {
    ROUTES
        .iter()
        .any(|r| r.credential == Credential::Header && path_matches(r.path, toggled))
}

/// Whether a request (a route, or a proxied RPC by its path) may change the services
/// list: the routes marked so, and the RPCs they serve.
pub fn writes_services(method: &axum::http::Method, path: &str) -> bool {
    ROUTES.iter().filter(|r| r.writes_services).any(|r| {
        (r.method == method.as_str() && path_matches(r.path, path))
            || (method == axum::http::Method::POST && r.rpc == Some(path))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use common::scope;
    use prost::Message;

    use super::*;

    #[test]
    fn routes_are_unique_and_well_formed() {
        for (i, r) in ROUTES.iter().enumerate() {
            let what = format!("{} {}", r.method, r.path);
            assert!(r.path.starts_with('/') && !r.path.contains("//"), "{what}");
            assert!(r.filter().is_some(), "{what}: method");
            assert!(
                ROUTES[..i].iter().all(|o| (o.method, o.path) != (r.method, r.path)),
                "{what} twice"
            );
            assert!(!r.summary.is_empty(), "{what} needs a summary");
            assert_ne!(r.access, Access::Internal, "{what}: no route is internal");
            for segment in r.path.split('/') {
                let placeholder = segment.starts_with('{') || segment.ends_with('}');
                let well_formed = segment.len() > 2 && segment.starts_with('{') && segment.ends_with('}');
                assert!(!placeholder || well_formed, "{what}: segment {segment}");
            }
            if r.credential == Credential::FirstMessage {
                assert_eq!(r.method, "GET", "{what}: a WebSocket upgrade is a GET");
                assert!(!r.json_before_scope && !r.writes_services, "{what}");
            }
            if r.json_before_scope {
                assert!(r.access.needs_token(), "{what}: a JSON body before the scope check");
                assert!(matches!(r.request, Contract(_)), "{what}: only fastDeploy decodes so");
            }
        }
        // The same path twice comes from entries next to each other, so the router
        // (and the table's reader) finds all of a path's methods in one place.
        for (i, r) in ROUTES.iter().enumerate() {
            if let Some(j) = ROUTES[..i].iter().rposition(|o| o.path == r.path) {
                assert_eq!(j + 1, i, "{} {}: keep a path's entries together", r.method, r.path);
            }
        }
    }

    /// The state handlers get; backends are lazy channels nobody listens on.
    fn state() -> AppState {
        use std::{sync::Arc, time::Duration};

        use common::token::RemoteVerifier;
        use tokio_util::sync::CancellationToken;

        let config = <crate::Config as clap::Parser>::parse_from(["gateway", "--backend-timeout-ms", "2000"]);
        let backends = crate::backends::Backends::new(&config).unwrap();
        let verifier = Arc::new(RemoteVerifier::new(backends.auth(), Duration::from_secs(30)));
        let shutdown = CancellationToken::new();
        AppState(Arc::new(server::Shared {
            hub: websocket::Hub::new(shutdown.clone()),
            services: crate::services_cache::ServicesCache::new(backends.clone(), verifier.clone(), shutdown),
            backends,
            verifier,
            legacy: None,
            max_body_bytes: config.max_body_bytes,
        }))
    }

    /// Every entry reaches its own handler through the router built from the table,
    /// for its method only (HEAD as GET); another method is 405 from the path's
    /// fallback. Without the interceptor in front, a handler that takes the caller
    /// answers 500 (it never runs unchecked); the others answer what they make of an
    /// empty request, never the router's 404 or 405.
    #[tokio::test]
    async fn every_entry_reaches_its_handler_and_only_for_its_method() {
        use axum::{body::Body as HttpBody, http::Request};
        use tower::ServiceExt;

        let app = router().with_state(state());
        let send = |method: &str, path: &str| {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .body(HttpBody::empty())
                .unwrap();
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await.unwrap();
                let status = response.status().as_u16();
                let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        for r in ROUTES {
            let path = r.path.split('/').map(|s| if s.starts_with('{') { "1" } else { s });
            let path = path.collect::<Vec<_>>().join("/");
            let what = format!("{} {}", r.method, r.path);
            let (status, body) = send(r.method, &path).await;
            if r.credential == Credential::FirstMessage {
                // The upgrade handler's own answer to a plain request.
                assert_eq!((status, body.as_str()), (404, r#"{"detail":"Not Found"}"#), "{what}");
                continue;
            }
            assert!(![404, 405].contains(&status), "{what}: {status} {body}");
            let takes_caller = r.access.needs_token() || r.json_before_scope;
            assert_eq!(status == 500, takes_caller, "{what}: {status} {body}");
            if r.method == "GET" {
                assert_eq!(send("HEAD", &path).await.0, status, "HEAD {}", r.path);
            }
            let (status, body) = send("PATCH", &path).await;
            assert_eq!(
                (status, body.as_str()),
                (405, r#"{"detail":"Method Not Allowed"}"#),
                "PATCH {}",
                r.path
            );
        }
        assert_eq!(send("GET", "/nowhere").await.0, 404);
    }

    #[test]
    fn every_access_names_a_permission_its_token_types_can_hold() {
        let accesses = RPCS.iter().map(|r| (r.path, r.access));
        for (path, access) in accesses.chain(ROUTES.iter().map(|r| (r.path, r.access))) {
            if let Access::Token { types, permission } = access {
                assert!(!types.is_empty(), "{path}: no token type");
                if let Some(p) = permission {
                    assert!(scope::is_known(p), "{path}: {p}");
                    for t in types {
                        assert!(scope::defaults(*t).contains(&p), "{path}: a {t} token never holds {p}");
                    }
                }
            }
        }
    }

    #[test]
    fn lookups_find_the_right_entry() {
        assert_eq!(
            route_of("PUT", "/deployments/finish/").unwrap().path,
            "/deployments/finish/"
        );
        assert_eq!(
            route_of("GET", "/deployments/7").unwrap().path,
            "/deployments/{deployment_id}"
        );
        assert!(route_of("GET", "/deployments/7/x").is_none());
        assert!(route_of("PATCH", "/token").is_none());
        // Literal paths win over the `{id}` templates beside them.
        for path in ["/v1/deployments/watch", "/v1/services/watch", "/v1/revocations/watch"] {
            assert_eq!(route_of("GET", path).unwrap().path, path);
        }

        use axum::http::Method;
        let Lookup::Found(get) = entry(&Method::GET, "/services/") else {
            panic!()
        };
        assert_eq!((get.method, get.path), ("GET", "/services/"));
        let Lookup::Found(head) = entry(&Method::HEAD, "/services/") else {
            panic!()
        };
        assert_eq!(head.method, "GET");
        // A known path, another method: the route's fallback answers 405.
        assert!(matches!(entry(&Method::PATCH, "/services/"), Lookup::OtherMethod));
        // An unknown template fails closed.
        assert!(matches!(entry(&Method::GET, "/nowhere/{x}"), Lookup::Unknown));
    }

    #[test]
    fn templates_match_whole_segments() {
        assert!(path_matches("/deployments/{id}", "/deployments/7"));
        assert!(!path_matches("/deployments/{id}", "/deployments/"));
        assert!(!path_matches("/deployments/{id}", "/deployments/7/x"));
        assert!(path_matches("/token", "/token"));
        assert!(!path_matches("/token", "/token/"));
    }

    #[test]
    fn redirects_go_to_served_paths_only() {
        assert!(redirects_to("/services/"));
        assert!(redirects_to("/v1/services/7"));
        assert!(redirects_to("/users/me"));
        assert!(!redirects_to("/nowhere"));
        assert!(!redirects_to("/deployments/ws/abc"), "the WebSocket is not redirected");
    }

    #[test]
    fn the_write_set_is_every_route_and_rpc_that_changes_services() {
        use axum::http::Method;
        let changes = |access: Access| {
            matches!(access, Access::Token { permission: Some(p), .. }
                if p == scope::SERVICES_SYNC || p == scope::SERVICES_DELETE)
        };
        for r in ROUTES.iter().filter(|r| changes(r.access)) {
            assert!(r.writes_services, "{} {} changes services", r.method, r.path);
        }
        for rpc in RPCS.iter().filter(|r| changes(r.access)) {
            assert!(writes_services(&Method::POST, rpc.path), "{}", rpc.path);
        }
        for (method, path, writes) in [
            (Method::POST, "/services/sync", true),
            (Method::DELETE, "/services/3", true),
            (Method::POST, "/v1/services/sync", true),
            (Method::DELETE, "/v1/services/3", true),
            (Method::GET, "/services/", false),
            (Method::GET, "/services/sync", false),
            (Method::GET, "/v1/services/3", false),
            (Method::DELETE, "/deployments/7", false),
            (Method::POST, "/slipway.registry.v1.RegistryService/ListServices", false),
        ] {
            assert_eq!(writes_services(&method, path), writes, "{method} {path}");
        }
    }

    /// (input, output, server streaming) of every RPC in the compiled contract.
    fn descriptor_rpcs() -> BTreeMap<String, (String, String, bool)> {
        let set = proto::wkt::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut rpcs = BTreeMap::new();
        for file in &set.file {
            let package = file.package.clone().unwrap_or_default();
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{package}.{}/{}", service.name(), method.name());
                    let name = |t: &str| t.trim_start_matches('.').to_owned();
                    let streaming = method.server_streaming.unwrap_or(false);
                    rpcs.insert(path, (name(method.input_type()), name(method.output_type()), streaming));
                }
            }
        }
        rpcs
    }

    #[test]
    fn every_rpc_served_at_the_edge_has_a_route_with_its_messages() {
        let contract = descriptor_rpcs();
        for rpc in RPCS {
            let routes: Vec<_> = ROUTES.iter().filter(|r| r.rpc == Some(rpc.path)).collect();
            if rpc.access == Access::Internal {
                assert!(routes.is_empty(), "{} is internal: no HTTP route", rpc.path);
                continue;
            }
            assert!(!routes.is_empty(), "{} needs an HTTP route", rpc.path);
            for r in routes {
                let what = format!("{} {} ({})", r.method, r.path, rpc.path);
                assert_eq!(r.access, rpc.access, "{what}: same access");
                let (input, output, streaming) = &contract[rpc.path];
                match r.response {
                    Proto(name) | ProtoStream(name) => assert_eq!(name, output, "{what}"),
                    other => panic!("{what}: response {other:?}, not {output}"),
                }
                if let Proto(name) = r.request {
                    assert_eq!(name, input, "{what}");
                }
                assert_eq!(matches!(r.response, ProtoStream(_)), *streaming, "{what} streams");
            }
        }
        for r in ROUTES {
            if let Some(rpc) = r.rpc {
                assert!(contract.contains_key(rpc), "{} {}: {rpc} is no RPC", r.method, r.path);
            }
        }
    }
}
