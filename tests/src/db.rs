//! Fresh databases per test: a SQLite file in a temp dir, or a new PostgreSQL database
//! that is dropped afterwards. PostgreSQL tests are required when `CI=true` (or
//! `SLIPWAY_REQUIRE_POSTGRES=1`) and skipped with a notice elsewhere when no server
//! answers.

use std::path::Path;

use sea_orm::{ConnectionTrait, Database};

/// `SLIPWAY_TEST_POSTGRES` or the local trust-auth server.
pub fn postgres_base_url() -> String {
    std::env::var("SLIPWAY_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn postgres_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("SLIPWAY_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Whether tests on this backend can run here. Panics when PostgreSQL is required
    /// but unreachable, so CI can never skip it silently.
    pub async fn available(self) -> bool {
        if self == Backend::Sqlite {
            return true;
        }
        let url = format!("{}/postgres", postgres_base_url());
        match Database::connect(&url).await {
            Ok(db) => {
                let _ = db.close().await;
                true
            }
            Err(error) if postgres_required() => {
                panic!("PostgreSQL is required here but unreachable at {url}: {error}")
            }
            Err(error) => {
                eprintln!("SKIPPED: PostgreSQL unreachable at {url} ({error}); set CI=true to require it");
                false
            }
        }
    }
}

/// One database for one service of one test.
pub struct TestDatabase {
    pub url: String,
    /// The database's name and the server it is on, to drop it afterwards.
    postgres_name: Option<(String, String)>,
}

impl TestDatabase {
    pub async fn create(backend: Backend, dir: &Path, service: &str) -> anyhow::Result<Self> {
        TestDatabase::create_on(backend, &postgres_base_url(), dir, service).await
    }

    /// [`TestDatabase::create`] on the PostgreSQL server at `base` (`postgres://user@host:port`).
    pub async fn create_on(backend: Backend, base: &str, dir: &Path, service: &str) -> anyhow::Result<Self> {
        match backend {
            Backend::Sqlite => Ok(TestDatabase {
                url: common::db::sqlite_url(dir, &format!("{service}.db")),
                postgres_name: None,
            }),
            Backend::Postgres => {
                let name = format!("slipway_test_{}_{}", service, uuid::Uuid::new_v4().simple());
                let admin = Database::connect(format!("{base}/postgres")).await?;
                admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await?;
                admin.close().await?;
                Ok(TestDatabase {
                    url: format!("{base}/{name}"),
                    postgres_name: Some((name, base.to_owned())),
                })
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((name, base)) = self.postgres_name.take() else {
            return;
        };
        // Drop may run inside or outside a runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                if let Ok(admin) = Database::connect(format!("{base}/postgres")).await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    if let Err(error) = admin.execute_unprepared(&sql).await {
                        eprintln!("could not drop test database {name}: {error}");
                    }
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}
