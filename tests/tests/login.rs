//! fastDeploy's `POST /token` and `GET /users/me` through the real gateway and auth
//! service (contract 1.1, 1.2, 2.3, 2.4), on SQLite and PostgreSQL.

use common::token::TokenType;
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use tests::{
    Backend, Stack, on_every_backend,
    stack::{ADMIN, ADMIN_PASSWORD},
    user_claims,
};

on_every_backend!(
    login_returns_a_token_that_users_me_accepts,
    login_failures_match_fastdeploy,
    users_me_refuses_every_bad_token,
);

async fn me(stack: &Stack, authorization: Option<&str>) -> (StatusCode, Option<String>, Value) {
    let mut request = stack.http.get(stack.url("/users/me"));
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let response = request.send().await.expect("GET /users/me");
    let status = response.status();
    let www = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    (status, www, response.json().await.unwrap_or(Value::Null))
}

async fn login_returns_a_token_that_users_me_accepts(backend: Backend) {
    let stack = Stack::start(backend).await;
    let (status, body) = stack.login(ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "exactly access_token and token_type: {body}"
    );
    let token = body["access_token"].as_str().unwrap();

    let (status, _, user) = me(&stack, Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, 200);
    assert_eq!(user, json!({"id": 1, "name": "admin"}));
    // The scheme is case-insensitive.
    let (status, _, _) = me(&stack, Some(&format!("bearer {token}"))).await;
    assert_eq!(status, 200);

    // The token is an EdDSA JWT with a key id and fastDeploy's claims.
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert!(header.kid.is_some());

    // A form without grant_type (as httpx/curl send it) and a multipart form both work.
    let response = stack
        .http
        .post(stack.url("/token"))
        .form(&[("username", ADMIN), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let form = reqwest::multipart::Form::new()
        .text("username", ADMIN)
        .text("password", ADMIN_PASSWORD);
    let response = stack
        .http
        .post(stack.url("/token"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn login_failures_match_fastdeploy(backend: Backend) {
    let stack = Stack::start(backend).await;
    let incorrect = json!({"detail": "Incorrect username or password"});
    for (user, password) in [(ADMIN, "wrong"), ("nobody", ADMIN_PASSWORD), ("", ""), (ADMIN, "")] {
        let response = stack
            .http
            .post(stack.url("/token"))
            .form(&[("username", user), ("password", password)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{user}/{password}");
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(response.json::<Value>().await.unwrap(), incorrect);
    }

    let missing =
        |field: &str| json!({"type": "missing", "loc": ["body", field], "msg": "Field required", "input": null});
    let cases: Vec<(Vec<(&str, &str)>, Value)> = vec![
        (vec![("password", "x")], json!([missing("username")])),
        (vec![("username", "x")], json!([missing("password")])),
        (vec![], json!([missing("username"), missing("password")])),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("username", "a"),
                ("password", "b"),
            ],
            json!([{
                "type": "string_pattern_mismatch",
                "loc": ["body", "grant_type"],
                "msg": "String should match pattern '^password$'",
                "input": "client_credentials",
                "ctx": {"pattern": "^password$"},
            }]),
        ),
    ];
    for (form, detail) in cases {
        let response = stack.http.post(stack.url("/token")).form(&form).send().await.unwrap();
        assert_eq!(response.status(), 422, "{form:?}");
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({ "detail": detail }),
            "{form:?}"
        );
    }

    // A JSON body is not a form: both fields are missing.
    let response = stack
        .http
        .post(stack.url("/token"))
        .json(&json!({"username": ADMIN, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"detail": [missing("username"), missing("password")]})
    );

    // Wrong method and unknown paths.
    let response = stack.http.get(stack.url("/token")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"detail": "Method Not Allowed"})
    );
    let response = stack.http.get(stack.url("/nope")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"detail": "Not Found"}));
    let response = stack.http.get(stack.url("/users/me/")).send().await.unwrap();
    assert_eq!(response.status(), 307);
    assert_eq!(response.headers()[header::LOCATION], stack.url("/users/me"));
}

async fn users_me_refuses_every_bad_token(backend: Backend) {
    let stack = Stack::start(backend).await;
    let not_authenticated = json!({"detail": "Not authenticated"});
    let invalid = json!({"detail": "Could not validate credentials"});

    for header in [None, Some("Basic YWRtaW46eA=="), Some("Token abc")] {
        let (status, www, body) = me(&stack, header).await;
        assert_eq!(status, 401, "{header:?}");
        assert_eq!(www.as_deref(), Some("Bearer"));
        assert_eq!(body, not_authenticated, "{header:?}");
    }

    let good = user_claims(ADMIN);
    let mut bad_tokens = tests::bad_tokens::variants(&stack, &good, &tests::bad_tokens::public_x(&stack).await);
    bad_tokens.push((
        "wrong type",
        stack.sign_with_real_key(&common::token::Claims {
            token_type: TokenType::Service,
            service: Some("hello".into()),
            ..good.clone()
        }),
    ));
    bad_tokens.push(("deleted user", stack.sign_with_real_key(&user_claims("ghost"))));
    for (what, token) in bad_tokens {
        let (status, www, body) = me(&stack, Some(&format!("Bearer {token}"))).await;
        assert_eq!(status, 401, "{what}");
        assert_eq!(www.as_deref(), Some("Bearer"), "{what}");
        assert_eq!(body, invalid, "{what}");
    }

    // A 1 MB header is refused by the HTTP layer itself, before any token work.
    let (status, _, _) = me(&stack, Some(&format!("Bearer {}", "a".repeat(1024 * 1024)))).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    // Sanity: the real key does sign acceptable tokens, so the refusals above are about
    // the one thing each case changed.
    let (status, _, _) = me(&stack, Some(&format!("Bearer {}", stack.sign_with_real_key(&good)))).await;
    assert_eq!(status, 200, "{}", stack.logs());
}
