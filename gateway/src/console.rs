//! The console: the browser UI in `web/` (TypeScript, built into `web/dist` and
//! committed), embedded in the binary by `build.rs` and served at `/ui/`; `/`
//! redirects there. Hashed files (`/ui/assets/…`) are immutable for a year; the page
//! itself is revalidated (`no-cache`, ETag) so a new gateway serves its new bundle at
//! once. A gzip copy is sent to clients that accept it. Every answer under `/ui/`
//! carries a strict Content-Security-Policy: scripts, styles and calls from this
//! origin only (the console talks grpc-web to this gateway), nothing inline, no frames.
//! Any other path under `/ui/` is the app's own (its router reads it), so it gets the
//! page; a missing asset is 404.

use axum::{
    extract::Path,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::error::ApiError;

/// One embedded file of `web/dist`.
pub struct Asset {
    /// Relative to `web/dist` (`index.html`, `assets/app-HASH.js`).
    pub path: &'static str,
    pub body: &'static [u8],
    pub gzip: Option<&'static [u8]>,
    /// A quoted strong ETag of `body`.
    pub etag: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// The page's policy: nothing from another origin, nothing inline.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Where `/ui/` lives; the page's links and the app's router start here.
pub const BASE: &str = "/ui/";

/// `GET /`: to the console.
pub async fn redirect() -> Response {
    (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, BASE)]).into_response()
}

/// `GET /ui/`: the page.
pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /ui/{*path}`: an asset, or the page for a path of the app.
pub async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    if path.starts_with("assets/") || find(&path).is_some() {
        serve(&path, &headers)
    } else {
        serve("index.html", &headers)
    }
}

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| p.replace(' ', "") == "q=0" || p.replace(' ', "") == "q=0.0");
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = find(path) else {
        return ApiError::not_found().into_response();
    };
    let immutable = path.starts_with("assets/");
    let cache = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == asset.etag || t.trim() == "*"))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        match asset.gzip.filter(|_| accepts_gzip(headers)) {
            Some(gzip) => ([(header::CONTENT_ENCODING, "gzip")], gzip).into_response(),
            None => asset.body.into_response(),
        }
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_is_embedded_with_gzip_copies() {
        let index = find("index.html").expect("web/dist/index.html is embedded");
        let page = std::str::from_utf8(index.body).unwrap();
        let scripts: Vec<_> = ASSETS.iter().filter(|a| a.path.ends_with(".js")).collect();
        assert!(!scripts.is_empty());
        for asset in ASSETS {
            assert!(asset.gzip.is_some(), "{} has no gzip copy", asset.path);
            if asset.path != "index.html" {
                assert!(
                    page.contains(&format!("{BASE}{}", asset.path)),
                    "{} is not in the page",
                    asset.path
                );
            }
        }
        assert!(!page.contains("<script>"), "no inline script");
    }

    #[test]
    fn gzip_is_sent_when_accepted_only() {
        let with = |value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            accepts_gzip(&h)
        };
        assert!(with("gzip, deflate, br"));
        assert!(with("br;q=1.0, gzip;q=0.8"));
        assert!(!with("br"));
        assert!(!with("gzip;q=0"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
