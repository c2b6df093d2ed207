//! The route table: every HTTP route of the gateway, once. Each entry names its method,
//! path, handler, the RPC it is the HTTP form of, who may call it, where its token comes
//! from, its OpenAPI summary and bodies, and what the layers around it must know (a
//! JSON body decoded before the scope check, a write that empties the services cache).
//!
//! The table, [`ROUTES`], is in `table.rs`; this module has its types and builders, and
//! what is derived from it: the axum router ([`router`]), the interceptor's scope check
//! ([`entry`]), the OpenAPI document (`openapi`), the trailing-slash redirects
//! ([`redirects_to`]) and the services cache's write set ([`writes_services`]). Unit
//! tests (`tests.rs`) keep the table well formed.
//!
//! A `/v1` route that is the HTTP form of an RPC names it with `.rpc(…)` and takes
//! its access rule from the RPC's entry in `common::scope_table::RPCS` (at compile time:
//! a misspelt RPC does not build). fastDeploy routes keep fastDeploy's own rules.

mod table;
#[cfg(test)]
mod tests;

use axum::routing::{MethodFilter, MethodRouter};
use common::{
    scope_table::{Access, RPCS},
    token::TokenType::{self, User},
};
pub use table::ROUTES;

use crate::server::{AppState, method_not_allowed};

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
    /// Plain text (`text/plain`) made of a proto message: a deployment's log, one
    /// output line per line.
    Text(&'static str),
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
    const fn token(mut self, types: &'static [TokenType], permission: common::scope::Permission) -> Self {
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
/// segment, a last `{*name}` the non-empty rest).
pub fn path_matches(template: &str, path: &str) -> bool {
    let (mut t, mut p) = (template.split('/'), path.split('/'));
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(ts), Some(ps)) if ts.starts_with("{*") && t.clone().next().is_none() => {
                return !ps.is_empty() || p.next().is_some();
            }
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
