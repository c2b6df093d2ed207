//! Backend authorization as one tonic layer, driven by the RPC part of the scope table
//! ([`scope_table::RPCS`]). Every backend serves its API behind [`AuthzLayer`]: for
//! each call it looks the RPC up by path (an RPC the table does not know is refused
//! UNIMPLEMENTED: fail closed), recognises an internal service the entry admits by its
//! credential, or verifies the bearer token and checks it against the entry, and hands
//! the handler a typed [`Caller`] in the request's extensions. Handlers keep only the
//! checks that depend on the resource (this service's deployment, this run, the
//! user's own tokens). A server stream opened with a token ends with that token: its
//! response body is cut with "token revoked" / "token expired" (UNAUTHENTICATED) or
//! UNAVAILABLE when the revocation feed goes stale, unless the service ends such
//! streams itself.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::Frame;
use tonic::{Status, body::Body, server::NamedService};
use tower::{Layer, Service};

pub use crate::scope_table::Refusal;
use crate::{
    error::ErrorCode,
    identity::TrustedCaller,
    scope_table::{self, Access, Rpc},
    token::{Claims, RemoteVerifier, TokenError, bearer_token},
};

/// Who made a call the layer admitted.
#[derive(Debug, Clone)]
pub enum Caller {
    /// An open RPC (login, public keys): no token is looked at.
    Anonymous,
    /// An internal Slipway service, by its credential (one of [`Rpc::services`]).
    Internal(&'static str),
    /// The holder of a verified token the entry admits.
    Token(Arc<Claims>),
}

impl Caller {
    /// The caller the layer put in `request`; INTERNAL when there is none (a service
    /// served without the layer refuses every call rather than trust it).
    pub fn of<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
        request.extensions().get::<Caller>().ok_or_else(|| {
            tracing::error!("a call reached its handler without the authorization layer");
            ErrorCode::Internal.status("internal error")
        })
    }

    /// The verified claims of the caller's token, for an RPC that takes only tokens.
    pub fn claims<T>(request: &tonic::Request<T>) -> Result<&Claims, Status> {
        match Caller::of(request)? {
            Caller::Token(claims) => Ok(claims),
            other => {
                tracing::error!(caller = ?other, "a token RPC admitted a caller without a token");
                Err(ErrorCode::Internal.status("internal error"))
            }
        }
    }

    /// The claims when the caller holds a token.
    pub fn token(&self) -> Option<&Claims> {
        match self {
            Caller::Token(claims) => Some(claims),
            _ => None,
        }
    }

    /// The internal service's name when one is the caller.
    pub fn service(&self) -> Option<&'static str> {
        match self {
            Caller::Internal(name) => Some(name),
            _ => None,
        }
    }
}

/// The future a server stream's end waits on: the status it must end with.
pub type TokenEnd = Pin<Box<dyn Future<Output = Status> + Send>>;

/// How a service checks the tokens presented to it.
pub trait TokenCheck: Send + Sync + 'static {
    /// The claims of a token that verifies and is not revoked.
    fn check_token(&self, token: &str) -> impl Future<Output = Result<Claims, TokenError>> + Send;

    /// For a server stream opened with `claims`: completes with the status the stream
    /// ends with once its token is no longer good. `None` when the service ends such
    /// streams itself.
    fn stream_end(self: Arc<Self>, claims: Claims) -> Option<TokenEnd>;
}

impl TokenCheck for RemoteVerifier {
    fn check_token(&self, token: &str) -> impl Future<Output = Result<Claims, TokenError>> + Send {
        self.verify(token)
    }

    fn stream_end(self: Arc<Self>, claims: Claims) -> Option<TokenEnd> {
        Some(token_end(self, claims))
    }
}

/// The end of a call made with the token of `claims`: when it is revoked, at its
/// `exp`, or when the revocation feed goes stale (see [`RemoteVerifier::token_ends`]).
pub fn token_end(verifier: Arc<RemoteVerifier>, claims: Claims) -> TokenEnd {
    Box::pin(async move {
        let reason = verifier.token_ends(claims).await;
        tracing::info!(%reason, "ending a stream: its token is no longer good");
        Status::from(Refusal::from(reason))
    })
}

/// The layer every backend serves its API behind (see the module docs).
pub struct AuthzLayer<V> {
    shared: Arc<Shared<V>>,
}

impl<V> Clone for AuthzLayer<V> {
    fn clone(&self) -> Self {
        AuthzLayer {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<V> {
    verifier: Arc<V>,
    /// The internal services whose credential this service knows; an entry still
    /// has to name one for its credential to count.
    trusted: Vec<TrustedCaller>,
}

impl<V: TokenCheck> AuthzLayer<V> {
    pub fn new(verifier: Arc<V>, trusted: Vec<TrustedCaller>) -> Self {
        AuthzLayer {
            shared: Arc::new(Shared { verifier, trusted }),
        }
    }

    /// `inner` (a service's generated tonic server) behind this layer.
    pub fn wrap<S>(&self, inner: S) -> Authz<S, V> {
        self.layer(inner)
    }
}

impl<S, V> Layer<S> for AuthzLayer<V> {
    type Service = Authz<S, V>;

    fn layer(&self, inner: S) -> Self::Service {
        Authz {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// A service behind [`AuthzLayer`].
pub struct Authz<S, V> {
    inner: S,
    shared: Arc<Shared<V>>,
}

impl<S: Clone, V> Clone for Authz<S, V> {
    fn clone(&self) -> Self {
        Authz {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: NamedService, V> NamedService for Authz<S, V> {
    const NAME: &'static str = S::NAME;
}

impl<V: TokenCheck> Shared<V> {
    /// Who is calling `rpc`, if the entry admits them.
    async fn admit(&self, rpc: &Rpc, headers: &http::HeaderMap) -> Result<Caller, Refusal> {
        for name in rpc.services {
            if self
                .trusted
                .iter()
                .any(|t| t.name() == *name && t.presented_in(headers))
            {
                return Ok(Caller::Internal(name));
            }
        }
        match rpc.access {
            Access::Open => return Ok(Caller::Anonymous),
            Access::Internal => return Err(Refusal::Internal),
            Access::AnyToken | Access::Token { .. } => {}
        }
        let header = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let token = bearer_token(header).ok_or(Refusal::MissingToken)?;
        let claims = self.verifier.check_token(token).await.map_err(|reason| {
            match reason {
                TokenError::RevocationsUnavailable => tracing::warn!("token refused: revocation feed stale"),
                _ => tracing::info!(%reason, "token refused"),
            }
            Refusal::from(reason)
        })?;
        rpc.access.check(&claims).inspect_err(|refusal| {
            tracing::info!(jti = %claims.jti, token_type = %claims.token_type, %refusal, "token refused: scope");
        })?;
        Ok(Caller::Token(Arc::new(claims)))
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl<S, V> Service<http::Request<Body>> for Authz<S, V>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    V: TokenCheck,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The ready service goes with this call; a clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            let Some(rpc) = scope_table::rpc(request.uri().path()) else {
                tracing::info!("call refused: no such RPC in the scope table");
                return Ok(Status::unimplemented("no such RPC here").into_http());
            };
            let caller = match shared.admit(rpc, request.headers()).await {
                Ok(caller) => caller,
                Err(refusal) => return Ok(Status::from(refusal).into_http()),
            };
            let end = match (&caller, rpc.server_streaming) {
                (Caller::Token(claims), true) => shared.verifier.clone().stream_end(Claims::clone(claims)),
                _ => None,
            };
            request.extensions_mut().insert(caller);
            let response = inner.call(request).await?;
            Ok(match end {
                Some(end) => response.map(|body| Body::new(EndingBody::new(body, end))),
                None => response,
            })
        })
    }
}

/// A stream's response body, ended early (trailers carrying the status `end` completes
/// with) unless the inner body sent its own trailers first. Nothing more of the inner
/// body is sent once `end` has completed.
pub struct EndingBody {
    inner: Body,
    /// Dropped once the inner body has sent its trailers.
    end: Option<TokenEnd>,
    done: bool,
}

impl EndingBody {
    pub fn new(inner: Body, end: TokenEnd) -> Self {
        EndingBody {
            inner,
            end: Some(end),
            done: false,
        }
    }
}

impl http_body::Body for EndingBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(end) = this.end.as_mut()
            && let Poll::Ready(status) = end.as_mut().poll(cx)
        {
            this.done = true;
            let mut trailers = status.into_http::<()>().into_parts().0.headers;
            trailers.remove(http::header::CONTENT_TYPE);
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            None => this.done = true,
            Some(Ok(frame)) if frame.is_trailers() => this.end = None,
            Some(_) => {}
        }
        Poll::Ready(frame)
    }

    /// Not at its end while `end` may still cut in (an empty inner body is polled
    /// once, and ends at once).
    fn is_end_stream(&self) -> bool {
        self.done || (self.end.is_none() && self.inner.is_end_stream())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic::Code;

    use super::*;
    use crate::{
        identity::{Credential, DEPLOY_SERVICE, GATEWAY, REGISTRY_SERVICE},
        scope,
        token::{
            TokenType,
            testing::{claims, now},
        },
    };

    /// Valid tokens by their text, and a few named failures.
    struct Fake(HashMap<&'static str, Claims>);

    impl TokenCheck for Fake {
        async fn check_token(&self, token: &str) -> Result<Claims, TokenError> {
            match token {
                "expired" => Err(TokenError::Expired),
                "revoked" => Err(TokenError::Revoked),
                "stale" => Err(TokenError::RevocationsUnavailable),
                other => self.0.get(other).cloned().ok_or(TokenError::Malformed),
            }
        }

        fn stream_end(self: Arc<Self>, _claims: Claims) -> Option<TokenEnd> {
            Some(Box::pin(async { Status::from(Refusal::Revoked) }))
        }
    }

    fn of(token_type: TokenType, permissions: Option<&[scope::Permission]>) -> Claims {
        let mut c = claims(now());
        c.token_type = token_type;
        c.permissions = permissions.map(|p| p.iter().copied().map(String::from).collect());
        c
    }

    struct Setup {
        service: Authz<tower::util::BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>, Fake>,
        deploy: Credential,
        registry: Credential,
        _dir: tempfile::TempDir,
    }

    /// The layer around a handler that answers with the caller it was given (in an
    /// `x-caller` header), trusting the deploy service and the gateway.
    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        for name in ["deploy", "gateway", "registry"] {
            Credential::create_if_missing(&path(name)).unwrap();
        }
        let trusted = vec![
            TrustedCaller::load(DEPLOY_SERVICE, &path("deploy")).unwrap(),
            TrustedCaller::load(GATEWAY, &path("gateway")).unwrap(),
        ];
        let tokens = Fake(HashMap::from([
            ("user", of(TokenType::User, None)),
            ("service", of(TokenType::Service, None)),
            ("reader", of(TokenType::User, Some(&[scope::DEPLOYMENTS_READ]))),
        ]));
        let handler = tower::service_fn(|request: http::Request<Body>| async move {
            let caller = request.extensions().get::<Caller>().cloned();
            let caller = match caller {
                Some(Caller::Anonymous) => "anonymous".to_owned(),
                Some(Caller::Internal(name)) => format!("internal {name}"),
                Some(Caller::Token(claims)) => format!("token {}", claims.token_type),
                None => "none".to_owned(),
            };
            let mut response = http::Response::new(Body::empty());
            response
                .headers_mut()
                .insert("x-caller", http::HeaderValue::from_str(&caller).unwrap());
            Ok::<_, Infallible>(response)
        });
        let layer = AuthzLayer::new(Arc::new(tokens), trusted);
        Setup {
            service: layer.wrap(tower::util::BoxCloneSyncService::new(handler)),
            deploy: Credential::load(DEPLOY_SERVICE, &path("deploy")).unwrap(),
            registry: Credential::load(REGISTRY_SERVICE, &path("registry")).unwrap(),
            _dir: dir,
        }
    }

    /// Calls `rpc` (a method of the auth or registry service) with `token` and/or
    /// `credential`: the caller the handler got, or the refusal's code and message.
    async fn call(
        setup: &Setup,
        rpc: &str,
        token: Option<&str>,
        credential: Option<&Credential>,
    ) -> Result<String, (Code, String)> {
        let mut request = http::Request::new(Body::empty());
        *request.uri_mut() = rpc.parse().unwrap();
        if let Some(token) = token {
            let value = http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
            request.headers_mut().insert(http::header::AUTHORIZATION, value);
        }
        if let Some(credential) = credential {
            let headers = credential.request(()).metadata().clone().into_headers();
            request.headers_mut().extend(headers);
        }
        let response = setup.service.clone().call(request).await.unwrap();
        match Status::from_header_map(response.headers()) {
            Some(status) => Err((status.code(), status.message().to_owned())),
            None => Ok(response.headers()["x-caller"].to_str().unwrap().to_owned()),
        }
    }

    const LIST: &str = "/slipway.registry.v1.RegistryService/ListServices";
    const MINT_DEPLOYMENT: &str = "/slipway.auth.v1.AuthService/MintDeploymentToken";

    #[tokio::test]
    async fn each_call_is_admitted_or_refused_by_its_entry() {
        let s = setup();
        let refused = |code: Code, message: &str| Err((code, message.to_owned()));
        // Unknown RPCs fail closed, even with a good token.
        assert_eq!(
            call(&s, "/slipway.auth.v1.AuthService/Nope", Some("user"), None).await,
            refused(Code::Unimplemented, "no such RPC here")
        );
        assert_eq!(
            call(&s, "/grpc.health.v1.Health/Check", None, None).await,
            refused(Code::Unimplemented, "no such RPC here")
        );
        // Open: no token looked at.
        let login = "/slipway.auth.v1.AuthService/Login";
        assert_eq!(call(&s, login, None, None).await.unwrap(), "anonymous");
        assert_eq!(call(&s, login, Some("garbage"), None).await.unwrap(), "anonymous");
        // A token entry: the token's type, then its permission.
        assert_eq!(call(&s, LIST, Some("user"), None).await.unwrap(), "token user");
        assert_eq!(
            call(&s, LIST, None, None).await,
            refused(Code::Unauthenticated, "missing bearer token")
        );
        assert_eq!(
            call(&s, LIST, Some("garbage"), None).await,
            refused(Code::Unauthenticated, "invalid token")
        );
        assert_eq!(
            call(&s, LIST, Some("expired"), None).await,
            refused(Code::Unauthenticated, "token expired")
        );
        assert_eq!(
            call(&s, LIST, Some("revoked"), None).await,
            refused(Code::Unauthenticated, "token revoked")
        );
        assert_eq!(
            call(&s, LIST, Some("stale"), None).await,
            refused(Code::Unavailable, "token revocation list unavailable")
        );
        assert_eq!(
            call(&s, LIST, Some("service"), None).await,
            refused(Code::PermissionDenied, "a service token may not make this call")
        );
        assert_eq!(
            call(&s, LIST, Some("reader"), None).await,
            refused(Code::PermissionDenied, "this token may not services:read")
        );
    }

    #[tokio::test]
    async fn internal_callers_only_where_their_entry_names_them() {
        let s = setup();
        // The deploy service's credential, where the entry names it.
        let deploy = Some(&s.deploy);
        assert_eq!(
            call(&s, MINT_DEPLOYMENT, None, deploy).await.unwrap(),
            "internal deploy-service"
        );
        assert_eq!(call(&s, LIST, None, deploy).await.unwrap(), "internal deploy-service");
        // ... and not where it does not: its token counts (here none).
        let sync = "/slipway.registry.v1.RegistryService/SyncServices";
        assert_eq!(
            call(&s, sync, None, deploy).await,
            Err((Code::Unauthenticated, "missing bearer token".to_owned()))
        );
        // Internal entries refuse every token, and callers this service does not trust.
        for (token, credential) in [(Some("user"), None), (None, None), (None, Some(&s.registry))] {
            assert_eq!(
                call(&s, MINT_DEPLOYMENT, token, credential).await.map_err(|e| e.0),
                Err(Code::PermissionDenied)
            );
        }
    }

    #[tokio::test]
    async fn a_stream_opened_with_a_token_ends_with_it() {
        let s = setup();
        let mut request = http::Request::new(Body::empty());
        *request.uri_mut() = "/slipway.registry.v1.RegistryService/WatchServices".parse().unwrap();
        request.headers_mut().insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer user"),
        );
        let response = s.service.clone().call(request).await.unwrap();
        let mut body = response.into_body();
        let frame = http_body_util::BodyExt::frame(&mut body).await.unwrap().unwrap();
        let trailers = frame.into_trailers().unwrap();
        let status = Status::from_header_map(&trailers).unwrap();
        assert_eq!(
            (status.code(), status.message()),
            (Code::Unauthenticated, "token revoked")
        );
        assert!(http_body_util::BodyExt::frame(&mut body).await.is_none());
    }
}
