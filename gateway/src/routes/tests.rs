//! Unit tests of the route table: well formed, complete, and what is derived from it.

use std::collections::BTreeMap;

use common::scope;
use prost::Message;

use super::{
    Body::{Contract, Proto, ProtoStream, Text},
    *,
};

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
    AppState(Arc::new(crate::server::Shared {
        hub: crate::fastdeploy::websocket::Hub::new(shutdown.clone()),
        services: crate::services_cache::ServicesCache::new(backends.clone(), None, shutdown),
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
                assert!(scope::is_known(p.as_str()), "{path}: {p}");
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
    assert!(path_matches("/ui/{*path}", "/ui/assets/app.js"));
    assert!(path_matches("/ui/{*path}", "/ui/deployments"));
    assert!(!path_matches("/ui/{*path}", "/ui/"));
    assert!(!path_matches("/ui/{*path}", "/v1/ui"));
}

#[test]
fn redirects_go_to_served_paths_only() {
    assert!(redirects_to("/services/"));
    assert!(redirects_to("/v1/services/7"));
    assert!(redirects_to("/users/me"));
    assert!(!redirects_to("/nowhere"));
    assert!(redirects_to("/ui/"), "/ui goes to the console");
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
                Proto(name) | ProtoStream(name) | Text(name) => assert_eq!(name, output, "{what}"),
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
