//! Request bodies are bounded while they are read, on every route and every protocol.
//!
//! HTTP routes: a `Content-Length` above the limit is 413 at once; otherwise the body
//! is wrapped in [`Capped`], which fails the read as soon as more than the limit has
//! arrived, and any answer to such a request is replaced by 413 `{"detail": "Request
//! body too large"}`, whichever reader (extractor, interceptor, form) hit the limit.
//! Nothing is read before the interceptor has checked the token, so a request without
//! a valid token is refused with its body unread. gRPC and grpc-web calls are bounded
//! in the proxy (`grpc_proxy`), by message, with the same type.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http_body::{Frame, SizeHint};

use crate::error::ApiError;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error a [`Capped`] body fails with once its limit is passed.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes")]
pub struct TooLarge(pub usize);

/// The 413 answer, in fastDeploy's `{"detail": …}` shape.
pub fn too_large() -> ApiError {
    ApiError::Detail(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large".into())
}

/// Whether a body-read error came from the limit (else the client went away or sent
/// a broken body).
pub fn is_too_large(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<TooLarge>())
}

/// The whole body of a request that passed [`limit`] (which bounds it): 413 past the
/// limit, 400 when the client broke off.
pub async fn read_all(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, usize::MAX).await.map_err(|error| {
        if is_too_large(&error) {
            too_large()
        } else {
            ApiError::Detail(StatusCode::BAD_REQUEST, "Could not read the request body".into())
        }
    })
}

/// The declared `Content-Length`, when there is a readable one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Middleware for the HTTP routes (the gRPC proxy bounds its own calls).
pub async fn limit(State(max): State<usize>, request: Request, next: Next) -> Response {
    if declared_length(request.headers()).is_some_and(|n| n > max as u64) {
        return too_large().into_response();
    }
    let exceeded = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| Body::new(Capped::new(body, max, exceeded.clone())));
    let response = next.run(request).await;
    if exceeded.load(Ordering::Acquire) {
        too_large().into_response()
    } else {
        response
    }
}

/// A body that fails with [`TooLarge`] (and raises `exceeded`) as soon as more than
/// `remaining` bytes of data have arrived. Frames put back with [`Capped::unread`]
/// come first and are not counted again.
pub struct Capped<B> {
    inner: B,
    limit: usize,
    remaining: usize,
    exceeded: Arc<AtomicBool>,
    unread: VecDeque<Frame<Bytes>>,
}

impl<B> Capped<B> {
    pub fn new(inner: B, limit: usize, exceeded: Arc<AtomicBool>) -> Self {
        Capped {
            inner,
            limit,
            remaining: limit,
            exceeded,
            unread: VecDeque::new(),
        }
    }

    /// Lowers the limit to `total` bytes in all; false when more has been read already.
    pub fn limit_to(&mut self, total: usize) -> bool {
        let read = self.limit - self.remaining;
        self.limit = total.min(self.limit);
        self.remaining = self.limit.saturating_sub(read);
        read <= self.limit
    }

    /// Puts frames already read back in front of the rest, in order.
    pub fn unread(&mut self, frames: impl IntoIterator<Item = Frame<Bytes>>) {
        self.unread.extend(frames);
    }
}

impl<B> http_body::Body for Capped<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(frame) = this.unread.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if this.exceeded.load(Ordering::Acquire) {
            return Poll::Ready(Some(Err(Box::new(TooLarge(this.limit)))));
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            if data.len() > this.remaining {
                this.exceeded.store(true, Ordering::Release);
                return Poll::Ready(Some(Err(Box::new(TooLarge(this.limit)))));
            }
            this.remaining -= data.len();
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.unread.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.unread.is_empty() {
            self.inner.size_hint()
        } else {
            SizeHint::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn chunks(sizes: &[usize]) -> Body {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            sizes.iter().map(|n| Ok(Bytes::from(vec![b'x'; *n]))).collect();
        Body::from_stream(futures::stream::iter(chunks))
    }

    #[tokio::test]
    async fn a_body_within_the_limit_reads_whole() {
        let flag = Arc::new(AtomicBool::new(false));
        let body = Capped::new(chunks(&[4, 6]), 10, flag.clone());
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 10);
        assert!(!flag.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn one_byte_over_fails_and_raises_the_flag() {
        let flag = Arc::new(AtomicBool::new(false));
        let body = Capped::new(chunks(&[4, 6, 1]), 10, flag.clone());
        let error = body.collect().await.err().unwrap();
        assert!(is_too_large(error.as_ref()));
        assert!(flag.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn frames_put_back_come_first_and_count_once() {
        let flag = Arc::new(AtomicBool::new(false));
        let mut body = Capped::new(chunks(&[3, 3, 4]), 10, flag.clone());
        let first = body.frame().await.unwrap().unwrap();
        body.unread([first]);
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 10);
        assert!(!flag.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn a_lowered_limit_counts_what_was_read() {
        let flag = Arc::new(AtomicBool::new(false));
        let mut body = Capped::new(chunks(&[5, 5, 1]), 100, flag.clone());
        let first = body.frame().await.unwrap().unwrap();
        assert!(body.limit_to(10));
        body.unread([first]);
        assert!(body.collect().await.is_err(), "11 bytes against 10");
        let mut body = Capped::new(chunks(&[5]), 100, Arc::new(AtomicBool::new(false)));
        body.frame().await.unwrap().unwrap();
        assert!(!body.limit_to(4));
    }

    #[test]
    fn lengths_are_read_when_sane() {
        let mut headers = HeaderMap::new();
        assert_eq!(declared_length(&headers), None);
        headers.insert(header::CONTENT_LENGTH, "419430400".parse().unwrap());
        assert_eq!(declared_length(&headers), Some(419_430_400));
        headers.insert(header::CONTENT_LENGTH, "x".parse().unwrap());
        assert_eq!(declared_length(&headers), None);
    }
}
