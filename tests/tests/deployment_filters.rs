//! `ListDeployments` filtered by status, origin and user on the server, over `/v1` and
//! gRPC, oldest or newest first: walking the pages of a filtered list gives exactly
//! the matching deployments once each, in order; a page token only goes with the
//! filters that gave it; bad filter values are refused. On SQLite and PostgreSQL.

use proto::deploy::v1::{self as pb, DeploymentStatus};
use reqwest::Method;
use serde_json::{Value, json};
use tests::deploy_rpc::{Fixture, write_service};
use tests::grpc::bearer;
use tests::support::{call, create_user, failing_script, get, passing_script, steps_config};
use tests::{Backend, on_every_backend};
use tonic::Code;

on_every_backend!(filtered_pages_hold_exactly_the_matching_deployments,);

/// A service token of `service` with `origin`, minted by the holder of `user_token`.
async fn service_token(f: &Fixture, user_token: &str, service: &str, origin: &str) -> String {
    let body = json!({"service": service, "origin": origin, "expirationInDays": 1});
    let (status, _, minted) = call(
        &f.stack,
        Method::POST,
        "/v1/tokens/service",
        Some(user_token),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{minted}");
    minted["token"].as_str().unwrap().to_owned()
}

/// One deployment as the list shows it: id, service, status, origin, user.
type Row = (i64, String, String, String, String);

/// A filter as a query string, and as its service, status, origin and user.
type Filter<'a> = (
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
);

fn rows_of_json(page: &Value) -> Vec<Row> {
    let text = |d: &Value, key: &str| d[key].as_str().unwrap_or_default().to_owned();
    page["deployments"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|d| {
            let status = text(d, "status")
                .trim_start_matches("DEPLOYMENT_STATUS_")
                .to_ascii_lowercase();
            let id = text(d, "id").parse().unwrap();
            (id, text(d, "service"), status, text(d, "origin"), text(d, "user"))
        })
        .collect()
}

fn row_of_pb(d: &pb::Deployment) -> Row {
    let status = DeploymentStatus::try_from(d.status).unwrap().as_str_name();
    let status = status.trim_start_matches("DEPLOYMENT_STATUS_").to_ascii_lowercase();
    (d.id, d.service.clone(), status, d.origin.clone(), d.user.clone())
}

/// Every page of `GET /v1/deployments?{query}` with pages of `size`.
async fn walk_v1(f: &Fixture, query: &str, size: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut path = format!("/v1/deployments?page_size={size}{query}");
    for _ in 0..100 {
        let (status, page) = get(&f.stack, &path, &f.admin).await;
        assert_eq!(status, 200, "{path}: {page}");
        let got = rows_of_json(&page);
        assert!(got.len() <= size, "{path}: {page}");
        rows.extend(got);
        match page["nextPageToken"].as_str() {
            Some(next) => path = format!("/v1/deployments?page_size={size}{query}&page_token={next}"),
            None => return rows,
        }
    }
    panic!("{query}: the pages never end");
}

/// Every page of the gRPC list with `request`'s filters and pages of `size`.
async fn walk_grpc(f: &Fixture, request: pb::ListDeploymentsRequest, size: u32) -> Vec<Row> {
    let mut deploy = f.deploy().await;
    let mut rows = Vec::new();
    let mut request = pb::ListDeploymentsRequest {
        page_size: size,
        ..request
    };
    for _ in 0..100 {
        let page = deploy
            .list_deployments(bearer(request.clone(), &f.admin))
            .await
            .unwrap()
            .into_inner();
        assert!(page.deployments.len() <= size as usize, "{page:?}");
        rows.extend(page.deployments.iter().map(row_of_pb));
        if page.next_page_token.is_empty() {
            return rows;
        }
        request.page_token = page.next_page_token;
    }
    panic!("{request:?}: the pages never end");
}

async fn filtered_pages_hold_exactly_the_matching_deployments(backend: Backend) {
    let f = Fixture::start(backend, |dir| {
        write_service(dir, "alpha", steps_config(), &passing_script());
        write_service(dir, "beta", steps_config(), &failing_script());
    })
    .await;
    create_user(&f.stack, &f.admin, "bob", "bob-password").await;
    let (status, bob) = f.stack.login("bob", "bob-password").await;
    assert_eq!(status, 200, "{bob}");
    let bob = bob["access_token"].as_str().unwrap().to_owned();

    // Deployments of two services, three origins and two users, succeeded and failed,
    // interleaved so that every filter's matches are spread over the whole list.
    let admin_ci_alpha = service_token(&f, &f.admin, "alpha", "ci").await;
    let admin_ci_beta = service_token(&f, &f.admin, "beta", "ci").await;
    let bob_github_alpha = service_token(&f, &bob, "alpha", "github").await;
    let bob_github_beta = service_token(&f, &bob, "beta", "github").await;
    let tokens = [&admin_ci_alpha, &bob_github_beta, &admin_ci_beta, &bob_github_alpha];
    for round in 0..3 {
        for token in tokens.iter().skip(round % 2) {
            let d = f.start_with(token, json!({})).await.unwrap();
            f.finished(d.id).await;
        }
    }
    let (status, _, by_user) = call(
        &f.stack,
        Method::POST,
        "/v1/deployments",
        Some(&bob),
        Some(json!({"service": "alpha"})),
    )
    .await;
    assert_eq!(status, 200, "{by_user}");
    f.finished(by_user["id"].as_str().unwrap().parse().unwrap()).await;

    let all = walk_v1(&f, "", 1000).await;
    assert!(all.len() >= 11, "{all:?}");
    assert!(
        all.windows(2).all(|w| w[0].0 < w[1].0),
        "oldest first by default: {all:?}"
    );
    let origins: Vec<&str> = all.iter().map(|r| r.3.as_str()).collect();
    assert!(origins.contains(&"ci") && origins.contains(&"github"), "{all:?}");

    let filters: [Filter; 7] = [
        ("&status=failed", None, Some("failed"), None, None),
        ("&status=succeeded", None, Some("succeeded"), None, None),
        ("&origin=github", None, None, Some("github"), None),
        ("&user=bob", None, None, None, Some("bob")),
        (
            "&user=admin&status=succeeded",
            None,
            Some("succeeded"),
            None,
            Some("admin"),
        ),
        ("&service=beta&origin=ci", Some("beta"), None, Some("ci"), None),
        ("&user=nobody", None, None, None, Some("nobody")),
    ];
    for (query, service, status, origin, user) in filters {
        let expected: Vec<Row> = all
            .iter()
            .filter(|r| {
                service.is_none_or(|s| r.1 == s)
                    && status.is_none_or(|s| r.2 == s)
                    && origin.is_none_or(|o| r.3 == o)
                    && user.is_none_or(|u| r.4 == u)
            })
            .cloned()
            .collect();
        assert_eq!(expected.is_empty(), user == Some("nobody"), "{query}: {all:?}");
        for size in [1, 2, 5] {
            assert_eq!(walk_v1(&f, query, size).await, expected, "{query} by {size}");
            let newest: Vec<Row> = expected.iter().rev().cloned().collect();
            let got = walk_v1(&f, &format!("{query}&newest_first=true"), size).await;
            assert_eq!(got, newest, "{query} newest first by {size}");
        }
        let request = pb::ListDeploymentsRequest {
            service: service.unwrap_or_default().into(),
            status: status.map_or(0, |s| {
                DeploymentStatus::from_str_name(&format!("DEPLOYMENT_STATUS_{}", s.to_ascii_uppercase())).unwrap()
                    as i32
            }),
            origin: origin.unwrap_or_default().into(),
            user: user.unwrap_or_default().into(),
            ..Default::default()
        };
        assert_eq!(walk_grpc(&f, request.clone(), 2).await, expected, "gRPC {query}");
        let newest = pb::ListDeploymentsRequest {
            newest_first: true,
            ..request
        };
        let got = walk_grpc(&f, newest, 3).await;
        assert_eq!(
            got,
            expected.iter().rev().cloned().collect::<Vec<_>>(),
            "gRPC {query} newest"
        );
    }

    // A page token goes with the filters and order of the list that gave it.
    let (_, first) = get(&f.stack, "/v1/deployments?page_size=1&status=failed", &f.admin).await;
    let next = first["nextPageToken"]
        .as_str()
        .expect("more than one failed")
        .to_owned();
    for other in [
        "",
        "&status=succeeded",
        "&status=failed&user=bob",
        "&status=failed&newest_first=true",
    ] {
        let path = format!("/v1/deployments?page_size=1{other}&page_token={next}");
        let (status, body) = get(&f.stack, &path, &f.admin).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body["detail"].as_str().unwrap().contains("other filters"), "{body}");
    }
    let again = format!("/v1/deployments?page_size=1&status=failed&page_token={next}");
    assert_eq!(get(&f.stack, &again, &f.admin).await.0, 200);

    // Bad filter values: 400 over /v1, INVALID_ARGUMENT over gRPC.
    let long = "x".repeat(2000);
    for bad in [
        "status=bogus",
        "status=RUNNING",
        "newest_first=maybe",
        &format!("origin={long}"),
    ] {
        let (status, body) = get(&f.stack, &format!("/v1/deployments?{bad}"), &f.admin).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["detail"].is_string(), "{body}");
    }
    let mut deploy = f.deploy().await;
    for bad in [
        pb::ListDeploymentsRequest {
            status: 99,
            ..Default::default()
        },
        pb::ListDeploymentsRequest {
            user: long.clone(),
            ..Default::default()
        },
    ] {
        let refused = deploy.list_deployments(bearer(bad, &f.admin)).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    }

    // A service token's list stays within its service, whatever the filters.
    let request = pb::ListDeploymentsRequest {
        status: DeploymentStatus::Failed as i32,
        ..Default::default()
    };
    let own = deploy
        .list_deployments(bearer(request, &bob_github_alpha))
        .await
        .unwrap()
        .into_inner();
    assert!(own.deployments.is_empty(), "alpha never fails: {own:?}");
}
