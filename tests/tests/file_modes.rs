//! Secrets at rest: each service's data dir is private to its user (0700) and SQLite
//! files with their `-wal` and `-shm` files are 0600, when created and at every start
//! (modes an older version or an operator left wider are narrowed). On SQLite and
//! PostgreSQL (where the data dir still holds the auth service's keys).

use std::{os::unix::fs::PermissionsExt, path::Path};

use tests::{Backend, Stack, on_every_backend};

on_every_backend!(data_dirs_and_database_files_are_private_and_kept_so);

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The database file of `service` and its WAL and shared-memory files, where they exist.
fn database_files(dir: &Path, service: &str) -> Vec<std::path::PathBuf> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| dir.join(format!("{service}.db{suffix}")))
        .filter(|p| p.exists())
        .collect()
}

async fn data_dirs_and_database_files_are_private_and_kept_so(backend: Backend) {
    let mut stack = Stack::start(backend).await;
    let dir = stack.dir.path().to_path_buf();
    if backend == Backend::Sqlite {
        for service in ["auth", "registry", "deploy"] {
            let files = database_files(&dir, service);
            // The database and at least its WAL: the services run in WAL mode.
            assert!(files.len() >= 2, "{service}: {files:?}");
            for file in files {
                assert_eq!(mode(&file), 0o600, "{} when created", file.display());
            }
        }
    }

    // Each service in turn, stopped, its data dir and files widened, started again.
    for service in ["auth", "registry", "deploy"] {
        stack.proc(service).kill();
        set_mode(&dir, 0o755);
        let files = database_files(&dir, service);
        for file in &files {
            set_mode(file, 0o644);
        }
        stack.restart(service).await;
        assert_eq!(mode(&dir), 0o700, "data dir after {service} started");
        for file in &files {
            assert_eq!(mode(file), 0o600, "{} after {service} started", file.display());
        }
    }
}
