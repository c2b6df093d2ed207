//! How the gateway serves the console: `/` and `/ui` redirect to `/ui/`; the page and
//! any path of the app under `/ui/` get the page with a strict Content-Security-Policy
//! and `no-cache`; hashed assets are immutable for a year, with an ETag (304 when it
//! matches) and gzip when accepted; a missing asset is 404; the page loads nothing
//! from another origin. No token needed: the page holds no data.

use reqwest::{StatusCode, header, redirect::Policy};
use tests::{Backend, Stack};

#[tokio::test(flavor = "multi_thread")]
async fn the_console_is_served_with_its_headers() {
    let stack = Stack::start(Backend::Sqlite).await;
    let http = reqwest::Client::builder().redirect(Policy::none()).build().unwrap();
    let get = async |path: &str, headers: &[(header::HeaderName, &str)]| {
        let mut request = http.get(stack.url(path));
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        request.send().await.unwrap()
    };

    for path in ["/", "/ui"] {
        let response = get(path, &[]).await;
        assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT, "{path}");
        let location = response.headers()[header::LOCATION].to_str().unwrap();
        assert!(location.ends_with("/ui/"), "{path} → {location}");
    }

    let page = get("/ui/", &[]).await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(page.headers()[header::CACHE_CONTROL], "no-cache");
    assert!(
        page.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("<script>") && !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );

    // A path of the app is the page too (its router reads the path).
    let deep = get("/ui/deployments/42", &[]).await;
    assert_eq!(deep.status(), 200);
    assert_eq!(deep.text().await.unwrap(), html);

    // The script the page names: immutable, ETag, gzip when accepted.
    let script = html
        .split("src=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        script.starts_with("/ui/assets/app-") && script.ends_with(".js"),
        "{script}"
    );
    let plain = get(&script, &[]).await;
    assert_eq!(plain.status(), 200);
    assert_eq!(
        plain.headers()[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
    assert!(
        plain.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let etag = plain.headers()[header::ETAG].to_str().unwrap().to_owned();
    let body = plain.bytes().await.unwrap();
    assert!(
        !body.windows(8).any(|w| w == b"https://"),
        "the bundle names no other origin"
    );
    let zipped = get(&script, &[(header::ACCEPT_ENCODING, "gzip, deflate, br")]).await;
    assert_eq!(zipped.headers()[header::CONTENT_ENCODING], "gzip");
    assert_eq!(zipped.headers()[header::ETAG].to_str().unwrap(), etag);
    let compressed = zipped.bytes().await.unwrap();
    assert!(
        compressed.len() < body.len() / 2,
        "{} of {}",
        compressed.len(),
        body.len()
    );
    let again = get(&script, &[(header::IF_NONE_MATCH, &etag)]).await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    assert_eq!(get("/ui/assets/missing-0000.js", &[]).await.status(), 404);
    // The API is untouched: fastDeploy's redirects and 404s stay as they were.
    assert_eq!(get("/services", &[]).await.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(get("/nowhere", &[]).await.status(), 404);
}
