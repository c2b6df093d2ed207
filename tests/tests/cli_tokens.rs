//! `slipway tokens debug` as an operator reads it: when the token was issued, when it
//! expires, and how long it has left (or since when it is expired).

use tests::support;

use common::token::TokenType;
use tests::grpc::claims_of;
use tests::{Backend, Stack};

fn debug(stack: &Stack, token: &str) -> String {
    let output = std::process::Command::new(tests::process::bin_dir().join("slipway"))
        .args(["tokens", "debug", token])
        .env("SLIPWAY_URL", stack.url(""))
        .env_remove("SLIPWAY_TOKEN")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// The RFC 3339 form of a token's time claim, as the CLI prints it.
fn claim(token: &str, key: &str) -> String {
    let seconds = claims_of(token)[key].as_i64().unwrap();
    chrono::DateTime::from_timestamp(seconds, 0).unwrap().to_rfc3339()
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_debug_shows_issue_and_expiry_times_and_what_is_left() {
    let stack = Stack::start(Backend::Sqlite).await;
    let admin = stack.admin_token().await;

    // A user token: 30 minutes, just issued.
    let out = debug(&stack, &admin);
    assert!(out.starts_with("valid now"), "{out}");
    let issued = format!("issued:      {} (", claim(&admin, "iat"));
    assert!(out.contains(&issued), "{out}");
    let expires = format!("expires:     {} (in 29m ", claim(&admin, "exp"));
    assert!(out.contains(&expires), "{out}");

    // An authentic token that expired two hours ago.
    let expired = support::signed(&stack, TokenType::User, -7200);
    let out = debug(&stack, &expired);
    assert!(out.starts_with("NOT valid"), "{out}");
    let expires = format!("expires:     {} (expired 2h 0m ago)", claim(&expired, "exp"));
    assert!(out.contains(&expires), "{out}");
    // `signed` backdates an expired token's issue time by an hour.
    let issued = format!("issued:      {} (1h 0m ago)", claim(&expired, "iat"));
    assert!(out.contains(&issued), "{out}");
}
