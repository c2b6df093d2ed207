//! Black-box test harness: builds and starts the real Slipway binaries on OS-assigned
//! loopback ports with temp dirs and fresh databases, polls health instead of
//! sleeping, prints every process log when a test fails, and tears everything down.

pub mod bad_tokens;
pub mod balancer;
pub mod browser;
pub mod claim_rate;
pub mod db;
pub mod deploy_rpc;
pub mod fault_fixture;
pub mod fault_load;
pub mod fault_record;
pub mod fault_watch;
pub mod gateway_fixture;
pub mod grpc;
pub mod keys;
pub mod log_fixture;
pub mod private_postgres;
pub mod process;
pub mod raw_http;
pub mod registry_fixture;
pub mod replica_fixture;
pub mod replicas;
pub mod scale_auth;
pub mod scale_out;
pub mod scale_watch;
pub mod slow_client;
pub mod small_fs;
pub mod soak;
pub mod stack;
pub mod support;
pub mod token_fixture;
pub mod up_fixture;
pub mod v1_fixture;
pub mod wait;
pub mod websocket_fixture;

pub use db::{Backend, TestDatabase};
pub use stack::{Process, Stack};
pub use wait::wait_until;

/// Runs each named scenario `async fn(Backend)` as one test on SQLite and one on
/// PostgreSQL (required in CI, skipped with a notice where no server answers).
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    if $crate::Backend::Postgres.available().await {
                        super::$name($crate::Backend::Postgres).await
                    }
                }
            )*
        }
    };
}

/// Claims of a user token for `user`, valid now for ten minutes.
pub fn user_claims(user: &str) -> common::token::Claims {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    common::token::Claims {
        iss: common::ISSUER.into(),
        aud: common::AUDIENCE.into(),
        sub: format!("user:{user}"),
        iat: now,
        nbf: now,
        exp: now + 600,
        jti: uuid::Uuid::new_v4().to_string(),
        token_type: common::token::TokenType::User,
        user: Some(user.into()),
        service: None,
        origin: None,
        deployment: None,
        permissions: None,
        parent: None,
        services: None,
        ext: None,
    }
}
