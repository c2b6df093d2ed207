//! The rest of `/v1`: one service by id or name and the services directory's names,
//! and ListTokens pages. On SQLite and PostgreSQL.

use tests::support;

use std::collections::HashSet;

use common::token::TokenType;
use reqwest::Method;
use serde_json::{Value, json};
use support::*;
use tests::v1_fixture::*;
use tests::{Backend, Stack, on_every_backend};

on_every_backend!(
    one_service_by_id_or_name_and_the_names,
    token_pages_walk_every_token_once,
);

async fn one_service_by_id_or_name_and_the_names(backend: Backend) {
    let stack = Stack::start_with(backend, services).await;
    let admin = stack.admin_token().await;
    let (status, listed) = get(&stack, "/v1/services", &admin).await;
    assert_eq!(status, 200, "{listed}");
    let alpha = listed["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "alpha")
        .unwrap()
        .clone();
    let id = alpha["id"].as_str().expect("int64 is a string in proto3 JSON");

    let (status, by_id) = get(&stack, &format!("/v1/services/{id}"), &admin).await;
    assert_eq!((status, &by_id), (200, &alpha));
    assert_eq!(by_id["data"]["description"], "test service");
    let (status, by_name) = get(&stack, "/v1/services/by-name/alpha", &admin).await;
    assert_eq!((status, &by_name), (200, &alpha));

    for missing in ["/v1/services/999999", "/v1/services/by-name/nope"] {
        let (status, body) = get(&stack, missing, &admin).await;
        assert_eq!(status, 404, "{missing}: {body}");
        assert!(body["detail"].is_string(), "{body}");
    }
    let (status, _) = get(&stack, "/v1/services/alpha", &admin).await;
    assert_eq!(status, 400, "an id is an integer");

    let (status, names) = get(&stack, "/v1/service-names", &admin).await;
    assert_eq!(status, 200, "{names}");
    let mut names: Vec<&str> = names["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["alpha", "beta", "broken"], "folders, synced or not");

    // Users with services:read only, like their RPCs.
    let config = signed(&stack, TokenType::Config, 600);
    let service = service_token(&stack, &admin, "alpha").await;
    for path in [
        format!("/v1/services/{id}"),
        "/v1/services/by-name/alpha".into(),
        "/v1/service-names".into(),
    ] {
        let (status, _, _) = call(&stack, Method::GET, &path, None, None).await;
        assert_eq!(status, 401, "{path}");
        for token in [&config, &service] {
            assert_eq!(get(&stack, &path, token).await.0, 403, "{path}");
        }
    }
}

/// More tokens than a page: walking the pages gives each token once, in the order of
/// the whole list; a page token the service did not give is 400, on every list route.
async fn token_pages_walk_every_token_once(backend: Backend) {
    let stack = Stack::start_with(backend, services).await;
    let admin = stack.admin_token().await;
    for _ in 0..7 {
        let (status, _, minted) = call(&stack, Method::POST, "/v1/tokens", Some(&admin), Some(json!({}))).await;
        assert_eq!(status, 200, "{minted}");
    }
    let ids = |page: &Value| -> Vec<String> {
        page["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, whole) = get(&stack, "/v1/tokens?page_size=1000", &admin).await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole.get("nextPageToken"), None, "one page holds them all");
    let whole = ids(&whole);
    assert!(whole.len() >= 8, "7 config tokens and the admin's session: {whole:?}");

    for (size, filter) in [(3, ""), (1, ""), (2, "&type=config")] {
        let mut seen = Vec::new();
        let mut path = format!("/v1/tokens?page_size={size}{filter}");
        for _ in 0..=whole.len() {
            let (status, page) = get(&stack, &path, &admin).await;
            assert_eq!(status, 200, "{path}: {page}");
            let got = ids(&page);
            assert!(got.len() <= size, "{path}: {page}");
            seen.extend(got);
            match page["nextPageToken"].as_str() {
                Some(next) => path = format!("/v1/tokens?page_size={size}{filter}&page_token={next}"),
                None => break,
            }
        }
        let expected: Vec<String> = if filter.is_empty() {
            whole.clone()
        } else {
            let (_, all_config) = get(&stack, "/v1/tokens?type=config", &admin).await;
            ids(&all_config)
        };
        assert_eq!(seen, expected, "page size {size}{filter}: every token once, in order");
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len());
    }

    // Every list route takes page_size and page_token alike.
    for list in ["/v1/tokens", "/v1/services", "/v1/deployments"] {
        let (status, page) = get(&stack, &format!("{list}?page_size=1"), &admin).await;
        assert_eq!(status, 200, "{list}: {page}");
        for bad in [
            "page_token=garbage!",
            "page_token=bm90LWEtY3Vyc29y",
            "page_size=-1",
            "page_size=x",
        ] {
            let (status, body) = get(&stack, &format!("{list}?{bad}"), &admin).await;
            assert_eq!(status, 400, "{list}?{bad}: {body}");
            assert!(body["detail"].is_string(), "{body}");
        }
    }
    let (_, page) = get(&stack, "/v1/services?page_size=1", &admin).await;
    assert_eq!(page["services"].as_array().unwrap().len(), 1);
    assert!(page["nextPageToken"].is_string(), "{page}");
}
