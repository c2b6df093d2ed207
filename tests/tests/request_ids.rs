//! Request ids at the backends: every gRPC server keeps a caller's sane `x-request-id`,
//! makes a UUID for a call without one (or with one that is not sane), answers it in
//! the response's headers (errors included), and its log lines for the call carry it;
//! the gateway's gRPC proxy passes a client's id through to the backend and back.

use proto::auth::v1::{self as auth, auth_service_client::AuthServiceClient};
use tests::{Backend, Stack, grpc::channel};
use tonic::metadata::MetadataMap;

fn with_id<T>(message: T, id: Option<&'static str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(id) = id {
        request.metadata_mut().insert("x-request-id", id.parse().unwrap());
    }
    request
}

fn id_of(metadata: &MetadataMap) -> String {
    metadata
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id in {metadata:?}"))
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn backends_keep_make_and_echo_request_ids() {
    let stack = Stack::start(Backend::Sqlite).await;
    for addr in [stack.auth, stack.gateway] {
        let mut auth = AuthServiceClient::new(channel(addr).await);

        let kept = auth
            .get_jwks(with_id(auth::GetJwksRequest {}, Some("ci-run-9.step-1")))
            .await
            .unwrap();
        assert_eq!(id_of(kept.metadata()), "ci-run-9.step-1", "{addr}");

        for sent in [None, Some("bad id with spaces")] {
            let made = auth.get_jwks(with_id(auth::GetJwksRequest {}, sent)).await.unwrap();
            let id = id_of(made.metadata());
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{addr}: {sent:?} gave {id}");
        }
    }

    // A refused call answers the id too, and the backend's log line for it carries it.
    let mut auth = AuthServiceClient::new(channel(stack.auth).await);
    let refused = auth
        .login(with_id(
            auth::LoginRequest {
                username: "admin".into(),
                password: "wrong password".into(),
            },
            Some("direct-login-3"),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(id_of(refused.metadata()), "direct-login-3");
    let log = stack.log("auth");
    let line = log
        .lines()
        .find(|l| l.contains("login refused"))
        .unwrap_or_else(|| panic!("no login refusal logged:\n{log}"));
    assert!(line.contains("direct-login-3"), "{line}");
}
