//! This replica's name in the runs it owns: given (`--replica-id`), or kept in a file
//! of its data dir, so that a replica restarted on the same data dir finds its own
//! runs (and their orphaned scripts) again.

use std::{io, path::Path};

/// The file in the data dir that keeps the replica id.
const FILE: &str = "deploy-replica-id";
/// Longest replica id accepted.
const MAX_LEN: usize = 128;

/// The replica id: `given`, else the one kept in `data_dir`, else a new one kept
/// there.
pub fn replica_id(given: Option<&str>, data_dir: &Path) -> io::Result<String> {
    if let Some(id) = given.map(str::trim).filter(|id| !id.is_empty()) {
        return valid(id).map(str::to_owned);
    }
    let path = data_dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return valid(text.trim()).map(str::to_owned),
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let id = uuid::Uuid::new_v4().to_string();
    let temporary = data_dir.join(format!("{FILE}.new"));
    std::fs::write(&temporary, format!("{id}\n"))?;
    std::fs::rename(&temporary, &path)?;
    Ok(id)
}

fn valid(id: &str) -> io::Result<&str> {
    if id.len() > MAX_LEN || id.chars().any(|c| c.is_control()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a replica id is at most {MAX_LEN} printable characters"),
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_across_restarts_unless_given() {
        let dir = tempfile::tempdir().unwrap();
        let first = replica_id(None, dir.path()).unwrap();
        assert_eq!(replica_id(None, dir.path()).unwrap(), first);
        assert_eq!(replica_id(Some(" deploy-1 "), dir.path()).unwrap(), "deploy-1");
        assert!(replica_id(Some("a\nb"), dir.path()).is_err());
        let other = tempfile::tempdir().unwrap();
        assert_ne!(replica_id(None, other.path()).unwrap(), first);
    }
}
