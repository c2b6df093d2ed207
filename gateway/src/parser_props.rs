//! Property tests of the gateway's parsers of outside input, generated and from the
//! corpus (`tests/corpus/<parser>`): fastDeploy's JSON bodies (`POST /deployments/`,
//! `/steps/`, `/service-token`) and login forms (urlencoded and multipart), `/v1` JSON
//! bodies, the WebSocket's client frames and grpc-web/gRPC message framing. Nothing
//! panics and no refusal is a server error (5xx).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    body::Body,
    extract::{FromRequest, Request},
    http::header,
    response::IntoResponse,
};
use bytes::Bytes;
use common::fuzz::{config, corpus, json_bytes, json_value, nasty_text, object_with};
use http_body_util::{BodyExt, StreamBody};
use proptest::prelude::*;
use serde_json::{Value, json};
use tonic::{Code, Status};

use crate::{
    error::ApiError,
    fastdeploy::{
        objects::{body_object, parse_json, start_env, step_report},
        service_token::validate,
        users::read_form,
        websocket::{ClientFrame, client_frame},
    },
    grpc_proxy::bounded,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("a runtime: {e}"))
}

/// A refusal must be the client's fault (4xx).
fn client_error(error: ApiError) -> Result<(), TestCaseError> {
    let status = error.into_response().status();
    prop_assert!(status.is_client_error(), "answered {}", status);
    Ok(())
}

fn check<T>(result: Result<T, ApiError>) -> Result<(), TestCaseError> {
    result.map_or_else(client_error, |_| Ok(()))
}

/// A fastDeploy body as the interceptor reads it, through each route's checks.
fn fastdeploy_body(bytes: &[u8]) -> Result<(), TestCaseError> {
    let body = match parse_json(bytes) {
        Ok(body) => body,
        Err(error) => return client_error(error),
    };
    check(body_object(body.clone()))?;
    check(start_env(body.clone()))?;
    check(step_report(body.clone()))?;
    check(validate(body))
}

/// A login form with `content_type` and `body`.
fn login_form(content_type: &str, body: Vec<u8>) -> Result<(), TestCaseError> {
    let request = Request::builder()
        .method("POST")
        .uri("/token")
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .map_err(|e| TestCaseError::reject(e.to_string()))?;
    check(runtime().block_on(read_form(request)))
}

/// A `/v1` JSON body read as message `T`.
fn v1_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<(), TestCaseError> {
    let request = Request::builder()
        .method("POST")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(bytes.to_vec()))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    check(runtime().block_on(crate::v1::Body::<T>::from_request(request, &())))
}

fn v1_bodies(bytes: &[u8]) -> Result<(), TestCaseError> {
    use proto::{auth::v1 as auth, deploy::v1 as deploy};
    v1_body::<deploy::StartDeploymentRequest>(bytes)?;
    v1_body::<deploy::ReportStepRequest>(bytes)?;
    v1_body::<auth::LoginRequest>(bytes)?;
    v1_body::<auth::CreateUserRequest>(bytes)?;
    v1_body::<auth::MintServiceTokenRequest>(bytes)?;
    v1_body::<auth::AttenuateTokenRequest>(bytes)
}

fn websocket_frame(text: &str) -> Result<(), TestCaseError> {
    let frame = client_frame(text);
    let json: Result<Value, _> = serde_json::from_str(text);
    prop_assert_eq!(frame == ClientFrame::NotJson, json.is_err());
    Ok(())
}

/// A gRPC request body in `chunks`, bounded at `max` bytes a message: refused with
/// RESOURCE_EXHAUSTED or CANCELLED, or passed on up to the end of its one message
/// (what follows it is an error the proxy answers RESOURCE_EXHAUSTED).
fn grpc_framing(chunks: Vec<Vec<u8>>, max: usize) -> Result<(), TestCaseError> {
    let sent: Vec<u8> = chunks.concat();
    let frames = chunks
        .into_iter()
        .map(|c| Ok::<_, Status>(http_body::Frame::data(Bytes::from(c))));
    let body = tonic::body::Body::new(StreamBody::new(futures::stream::iter(frames)));
    let exceeded = Arc::new(AtomicBool::new(false));
    runtime().block_on(async {
        match bounded(body, max, exceeded.clone()).await {
            Ok(mut body) => {
                let mut passed = Vec::new();
                while let Some(frame) = body.frame().await {
                    match frame {
                        Ok(frame) => passed.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..])),
                        // The proxy answers RESOURCE_EXHAUSTED when `exceeded` is set.
                        Err(status) => {
                            prop_assert!(exceeded.load(Ordering::Acquire), "{:?}", status);
                            break;
                        }
                    }
                }
                prop_assert!(passed.len() <= max + 5, "{} bytes passed", passed.len());
                prop_assert!(sent.starts_with(&passed));
            }
            Err(status) => prop_assert!(
                matches!(status.code(), Code::ResourceExhausted | Code::Cancelled),
                "{:?}",
                status
            ),
        }
        Ok(())
    })
}

/// A message header (flag, declared length) and payload, cut into chunks anywhere.
fn grpc_chunks() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let length = prop_oneof![0u32..64, any::<u32>()];
    (
        any::<u8>(),
        length,
        prop::collection::vec(any::<u8>(), 0..96),
        1usize..8,
    )
        .prop_map(|(flag, length, payload, pieces)| {
            let mut bytes = vec![flag];
            bytes.extend_from_slice(&length.to_be_bytes());
            bytes.extend_from_slice(&payload);
            let size = bytes.len().div_ceil(pieces).max(1);
            bytes.chunks(size).map(<[u8]>::to_vec).collect()
        })
}

#[test]
fn the_corpus_is_parsed_without_panic_or_5xx() {
    for (name, input) in corpus("json_body") {
        let run = || -> Result<(), TestCaseError> {
            fastdeploy_body(&input)?;
            v1_bodies(&input)
        };
        run().unwrap_or_else(|e| panic!("json_body/{name}: {e}"));
    }
    for (name, input) in corpus("login_form") {
        // First line: the content type; the rest: the body.
        let split = input.iter().position(|b| *b == b'\n').unwrap_or(input.len());
        let content_type = String::from_utf8_lossy(&input[..split]).into_owned();
        let body = input.get(split + 1..).unwrap_or_default().to_vec();
        login_form(&content_type, body).unwrap_or_else(|e| panic!("login_form/{name}: {e}"));
    }
    for (name, input) in corpus("websocket_frame") {
        websocket_frame(&String::from_utf8_lossy(&input)).unwrap_or_else(|e| panic!("websocket_frame/{name}: {e}"));
    }
    for (name, input) in corpus("grpc_frame") {
        for max in [0, 4, 1024] {
            let chunks = input.chunks(3).map(<[u8]>::to_vec).collect();
            grpc_framing(chunks, max).unwrap_or_else(|e| panic!("grpc_frame/{name}: {e}"));
        }
    }
}

const START_FIELDS: &[&str] = &[
    "env",
    "service",
    "name",
    "state",
    "started",
    "finished",
    "message",
    "origin",
    "expiration_in_days",
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fastdeploy_bodies_of_any_bytes(bytes in json_bytes()) {
        fastdeploy_body(&bytes)?;
    }

    #[test]
    fn fastdeploy_bodies_of_any_shape(object in object_with(START_FIELDS, json!({
        "env": {"a": 1}, "service": "svc", "name": "build", "state": "success",
        "started": "2026-01-01T00:00:00Z", "finished": "2026-01-01T00:00:01", "message": "ok",
        "origin": "ci", "expiration_in_days": 1,
    }))) {
        fastdeploy_body(object.to_string().as_bytes())?;
    }

    #[test]
    fn datetimes_of_any_text(started in nasty_text(), finished in json_value()) {
        let body = json!({"name": "a", "state": "success", "started": started, "finished": finished, "message": ""});
        check(step_report(Some(body)))?;
    }

    #[test]
    fn urlencoded_login_forms(body in prop_oneof![
        any::<Vec<u8>>(),
        prop::collection::vec((nasty_text(), nasty_text()), 0..6)
            .prop_map(|pairs| serde_urlencoded::to_string(pairs).unwrap_or_default().into_bytes()),
    ]) {
        login_form("application/x-www-form-urlencoded", body)?;
    }

    #[test]
    fn multipart_login_forms(
        boundary in prop_oneof![Just("XyZ".to_owned()), nasty_text()],
        parts in prop::collection::vec((nasty_text(), nasty_text()), 0..4),
        tail in any::<Vec<u8>>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut body = Vec::new();
        for (name, value) in &parts {
            body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes());
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        body.extend_from_slice(&tail);
        let at = cut.index(body.len() + 1);
        login_form(&format!("multipart/form-data; boundary={boundary}"), body[..at].to_vec())?;
    }

    #[test]
    fn v1_json_bodies(bytes in json_bytes()) {
        v1_bodies(&bytes)?;
    }

    #[test]
    fn websocket_client_frames(text in prop_oneof![
        nasty_text(),
        json_value().prop_map(|v| v.to_string()),
        json_value().prop_map(|v| json!({"access_token": v}).to_string()),
    ]) {
        websocket_frame(&text)?;
    }

    #[test]
    fn grpc_message_framing(chunks in grpc_chunks(), max in prop_oneof![0usize..16, Just(64usize), Just(1 << 20)]) {
        grpc_framing(chunks, max)?;
    }
}
