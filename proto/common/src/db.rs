//! Database connections: SQLite (the embedded default, one file per service) or
//! PostgreSQL, chosen by the URL.

use std::{
    fs::{DirBuilder, OpenOptions, Permissions},
    io,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

/// The advisory lock key migrations take turns on ("SLPW" + 0).
const MIGRATION_LOCK: i64 = 0x534c_5057_0000_0000;

/// Runs `migrate` while every other process migrating the same PostgreSQL database
/// waits (replicas starting at once would otherwise race to create the same tables
/// and types); on SQLite (one process) it just runs it. The lock is a session
/// advisory lock on a connection of its own, released when `migrate` is done.
pub async fn migrate_alone<F, Fut>(db: &DatabaseConnection, migrate: F) -> Result<(), DbErr>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), DbErr>>,
{
    use sea_orm::sqlx::{Connection, postgres::PgConnection};
    if db.get_database_backend() != sea_orm::DbBackend::Postgres {
        return migrate().await;
    }
    let lock_failed = |error: sea_orm::sqlx::Error| DbErr::Custom(format!("taking the migration lock: {error}"));
    let options = db.get_postgres_connection_pool().connect_options().as_ref().clone();
    let mut lock = PgConnection::connect_with(&options).await.map_err(lock_failed)?;
    sea_orm::sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut lock)
        .await
        .map_err(lock_failed)?;
    let migrated = migrate().await;
    // Closing the session releases the lock too.
    let _ = lock.close().await;
    migrated
}

/// The URL of a service's SQLite file inside the data directory, created if missing.
pub fn sqlite_url(data_dir: &Path, file: &str) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join(file).display())
}

/// Connects to SQLite or PostgreSQL. SQLite runs in WAL mode with a busy timeout, so
/// readers never block the writer. A SQLite file (and its `-wal` and `-shm` files) is
/// private to this user, mode 0600: created so, and narrowed at every connect if it
/// was wider; a missing parent directory is created with mode 0700.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let sqlite_file = sqlite_path(url);
    if let Some(path) = &sqlite_file {
        secure_sqlite_file(path, url.contains("mode=rwc"))
            .map_err(|e| DbErr::Custom(format!("making {} private: {e}", path.display())))?;
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10));
    if url.starts_with("sqlite:") {
        options.map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    } else {
        options.max_connections(16);
    }
    let db = match Database::connect(options).await {
        Ok(db) => db,
        // SQLite's own words ("unable to open database file") do not say why.
        Err(error) => match sqlite_file.as_deref().and_then(unwritable_dir) {
            Some(why) => {
                return Err(DbErr::Custom(format!(
                    "{why}: SQLite in WAL mode writes next to its database, even to read ({error})"
                )));
            }
            None => return Err(error),
        },
    };
    if let Some(path) = &sqlite_file {
        // Opening in WAL mode created these (with the database file's mode); ones a
        // previous process left with a wider mode are narrowed here.
        for suffix in ["-wal", "-shm"] {
            let mut side = path.clone().into_os_string();
            side.push(suffix);
            narrow(Path::new(&side), 0o600)
                .map_err(|e| DbErr::Custom(format!("making {} private: {e}", Path::new(&side).display())))?;
        }
    }
    Ok(db)
}

/// Why the directory of a SQLite file cannot be written to (a read-only file system,
/// say), if it cannot.
fn unwritable_dir(file: &Path) -> Option<String> {
    let dir = file.parent()?;
    let probe = dir.join(".slipway-write-probe");
    match OpenOptions::new().write(true).create(true).truncate(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(error) => Some(format!(
            "the database directory {} is not writable ({error})",
            dir.display()
        )),
    }
}

/// Makes `dir` private to this user: created with mode 0700 (parents too) when missing,
/// narrowed to 0700 when it exists with a wider mode. A directory this user may not
/// change (one it does not own) is left as it is, with a warning.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    match narrow(dir, 0o700) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot make the data dir private (mode 0700)");
            Ok(())
        }
        other => other,
    }
}

/// The file of a SQLite URL (`sqlite://path?…` or `sqlite:path?…`), none for other
/// databases and in-memory ones.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" || query.contains("mode=memory") {
        return None;
    }
    Some(PathBuf::from(path))
}

/// The database file at mode 0600: created so (with a 0700 parent when that is missing
/// too) when `create`, else narrowed if it exists.
fn secure_sqlite_file(path: &Path, create: bool) -> io::Result<()> {
    if create && !path.exists() {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
            DirBuilder::new().recursive(true).mode(0o700).create(parent)?;
        }
        // SQLite takes an empty file for a new database. Another process may have
        // created it meanwhile: then it is narrowed below like any existing one.
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    narrow(path, 0o600)
}

/// Takes away every permission bit beyond `mode` from `path`, if it exists.
fn narrow(path: &Path, mode: u32) -> io::Result<()> {
    let current = match std::fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if current & !mode != 0 {
        std::fs::set_permissions(path, Permissions::from_mode(current & mode))?;
    }
    Ok(())
}

/// Whether a database error means the database cannot be reached for now: it is
/// down, restarting or shutting down, the connection was lost, no connection came
/// free in time, a statement was cancelled by its timeout, or SQLite is busy. Such a
/// failure is answered UNAVAILABLE (503: try again), not INTERNAL: nothing is wrong
/// with the request or the data, and nothing was stored.
pub fn is_unavailable(error: &DbErr) -> bool {
    use sea_orm::{RuntimeErr, sqlx::Error};
    let sqlx = match error {
        DbErr::ConnectionAcquire(_) => return true,
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => e,
        DbErr::Conn(_) => return true,
        _ => return false,
    };
    match &**sqlx {
        Error::Io(_)
        | Error::Tls(_)
        | Error::Protocol(_)
        | Error::PoolTimedOut
        | Error::PoolClosed
        | Error::WorkerCrashed => true,
        Error::Database(db) => db.code().is_some_and(|code| {
            // PostgreSQL: connection exceptions, shutdowns, "cannot connect now", too many
            // connections, a cancelled statement (statement_timeout), a lock not granted.
            // SQLite: busy and locked (with their extended codes).
            code.starts_with("08")
                || code.starts_with("57P")
                || matches!(&*code, "53300" | "57014" | "55P03" | "5" | "261" | "517" | "6" | "262")
        }),
        _ => false,
    }
}

/// What a storage error answers when the fault is the database's or the disk's, not
/// the service's: UNAVAILABLE, saying whether the database is out of reach (try again
/// shortly) or the disk is full or read-only (see `error::storage_refusal`). `None`:
/// an internal error.
pub fn outage_status(error: &(dyn std::error::Error + 'static)) -> Option<tonic::Status> {
    unavailable_status(error).or_else(|| {
        let status = crate::error::storage_refusal(error)?;
        tracing::warn!(%error, "storage refuses writes");
        Some(status)
    })
}

/// The UNAVAILABLE status for `error` when it is, or wraps (through its `source`
/// chain), a database error that [`is_unavailable`]; logged as a warning.
pub fn unavailable_status(error: &(dyn std::error::Error + 'static)) -> Option<tonic::Status> {
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(db) = current.downcast_ref::<DbErr>()
            && is_unavailable(db)
        {
            tracing::warn!(error = %db, "the database is unavailable");
            return Some(crate::error::ErrorCode::Unavailable.status("the database is unavailable; try again shortly"));
        }
        next = current.source();
    }
    None
}

/// The database URL with any password removed, for logs.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{}@{}", &url[..scheme_end + 3], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_file_of_sqlite_urls_only() {
        assert_eq!(sqlite_path("sqlite:///x/y.db?mode=rwc"), Some(PathBuf::from("/x/y.db")));
        assert_eq!(sqlite_path("sqlite:data/y.db"), Some(PathBuf::from("data/y.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("sqlite://x.db?mode=memory"), None);
        assert_eq!(sqlite_path("postgres://u@h/db"), None);
    }

    #[test]
    fn an_unreachable_database_is_unavailable_and_a_bad_query_is_not() {
        use std::sync::Arc;

        use sea_orm::{ConnAcquireErr, RuntimeErr, sqlx};
        let sqlx = |e: sqlx::Error| DbErr::Query(RuntimeErr::SqlxError(Arc::new(e)));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        for unavailable in [
            DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
            sqlx(sqlx::Error::Io(reset)),
            sqlx(sqlx::Error::PoolTimedOut),
        ] {
            assert!(is_unavailable(&unavailable), "{unavailable}");
            let status = unavailable_status(&unavailable).expect("a status");
            assert_eq!(status.code(), tonic::Code::Unavailable);
        }
        for other in [DbErr::Custom("bad".into()), sqlx(sqlx::Error::RowNotFound)] {
            assert!(!is_unavailable(&other), "{other}");
            assert!(unavailable_status(&other).is_none());
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redacted("postgres://u:secret@h/db"), "postgres://u@h/db");
        assert_eq!(redacted("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redacted("sqlite:///x/y.db?mode=rwc"), "sqlite:///x/y.db?mode=rwc");
    }
}
