//! Request ids, through tower-http's `SetRequestId` and `PropagateRequestId`: every
//! request served (by the gateway over HTTP, by a backend over gRPC) has an
//! `x-request-id`, the caller's when it sent a sane one, else a new random UUID; the
//! response echoes it. The gateway passes it on to the backends, so one id follows a
//! call through every service's log lines.

use http::{HeaderName, HeaderValue, Request};
use tower::{
    ServiceBuilder,
    layer::util::{Identity, Stack},
    util::MapRequestLayer,
};
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};

/// The header (and gRPC metadata key) carrying a request's id.
pub const HEADER: HeaderName = HeaderName::from_static(KEY);
pub const KEY: &str = "x-request-id";

/// An id a client may choose: 1 to 128 characters of `[A-Za-z0-9-_.:]`, so it can go
/// into log lines and metadata as it is.
pub fn is_sane(value: &HeaderValue) -> bool {
    let text = value.as_bytes();
    !text.is_empty() && text.len() <= 128 && text.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
}

/// Makes a new random (v4) UUID for a request that came without a (sane) id, from the
/// thread's generator rather than a system call per request.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewUuid;

impl NewUuid {
    pub fn id() -> HeaderValue {
        let uuid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        // A hyphenated UUID is always a valid header value.
        HeaderValue::from_str(uuid.hyphenated().encode_lower(&mut text)).unwrap_or(HeaderValue::from_static("-"))
    }
}

impl MakeRequestId for NewUuid {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        Some(RequestId::new(NewUuid::id()))
    }
}

/// Drops an id that is not sane, so `SetRequestId` makes a new one in its place.
fn drop_insane<B>(mut request: Request<B>) -> Request<B> {
    if request.headers().get(&HEADER).is_some_and(|id| !is_sane(id)) {
        request.headers_mut().remove(&HEADER);
    }
    request
}

/// The request-id layers, outermost first: an insane id is dropped; a request without
/// one gets a new one (in its headers and its `RequestId` extension), which is what the
/// layers and handlers inside see; the response gets that id unless it has one.
pub type Layers<B> = Stack<
    PropagateRequestIdLayer,
    Stack<SetRequestIdLayer<NewUuid>, Stack<MapRequestLayer<fn(Request<B>) -> Request<B>>, Identity>>,
>;

/// [`Layers`] for services whose requests have bodies of type `B`.
pub fn layers<B>() -> ServiceBuilder<Layers<B>> {
    ServiceBuilder::new()
        .layer(MapRequestLayer::new(drop_insane::<B> as fn(Request<B>) -> Request<B>))
        .layer(SetRequestIdLayer::new(HEADER, NewUuid))
        .layer(PropagateRequestIdLayer::new(HEADER))
}

/// The id of `request` for its log span (`-` when it has none, outside these layers).
pub fn of<B>(request: &Request<B>) -> &str {
    request
        .headers()
        .get(&HEADER)
        .and_then(|id| id.to_str().ok())
        .unwrap_or("-")
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Service, ServiceExt};

    use super::*;

    #[test]
    fn ids_are_kept_when_sane_and_made_up_otherwise() {
        assert!(is_sane(&HeaderValue::from_static("ci-run-42.step-7")));
        assert!(!is_sane(&HeaderValue::from_static("bad id with spaces")));
        assert!(!is_sane(&HeaderValue::from_static("")));
        assert!(!is_sane(&HeaderValue::from_str(&"a".repeat(129)).unwrap()));
        let id = NewUuid::id();
        let parsed = uuid::Uuid::parse_str(id.to_str().unwrap()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_ne!(NewUuid::id(), id);
    }

    /// The layers around a service answering the id it saw, as the handler would.
    async fn seen_and_echoed(sent: Option<&'static str>) -> (String, String) {
        let mut service = layers::<()>().service_fn(|request: Request<()>| async move {
            let seen = request
                .extensions()
                .get::<RequestId>()
                .map(|id| id.header_value().clone());
            assert_eq!(seen.as_ref(), request.headers().get(&HEADER));
            Ok::<_, Infallible>(http::Response::new(of(&request).to_owned()))
        });
        let mut request = Request::new(());
        if let Some(id) = sent {
            request.headers_mut().insert(HEADER, HeaderValue::from_static(id));
        }
        let response = service.ready().await.unwrap().call(request).await.unwrap();
        let echoed = response.headers()[HEADER].to_str().unwrap().to_owned();
        (response.into_body(), echoed)
    }

    #[tokio::test]
    async fn a_sane_id_is_kept_and_echoed_and_any_other_replaced() {
        assert_eq!(
            seen_and_echoed(Some("ci-run-42.step-7")).await,
            ("ci-run-42.step-7".to_owned(), "ci-run-42.step-7".to_owned())
        );
        for sent in [None, Some("bad id with spaces")] {
            let (seen, echoed) = seen_and_echoed(sent).await;
            assert_eq!(seen, echoed);
            assert!(uuid::Uuid::parse_str(&seen).is_ok(), "{seen}");
        }
    }
}
