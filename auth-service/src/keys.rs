//! The signing keys: Ed25519, one file per key in a private directory (0700, files
//! 0600). The newest key signs; every key still on disk verifies, so tokens signed
//! before a rotation stay valid until they expire.

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::RwLock,
};

use ed25519_dalek::{SigningKey, pkcs8::EncodePrivateKey};
use jsonwebtoken::EncodingKey;
use proto::auth::v1::Jwks;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("key file {0} is not an Ed25519 key")]
    BadKey(PathBuf),
    #[error("cannot encode signing key")]
    Encode,
    #[error("key ring lock poisoned")]
    Poisoned,
}

struct Key {
    seq: u32,
    kid: String,
    signing: SigningKey,
    encoding: EncodingKey,
}

/// The signing key currently in use.
pub struct ActiveKey {
    pub kid: String,
    pub encoding: EncodingKey,
}

pub struct KeyRing {
    dir: PathBuf,
    keys: RwLock<Vec<Key>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Loads every key in `dir`, creating the directory and a first key if needed.
    pub fn open(dir: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: dir.to_owned(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
        let keys = read_keys(dir)?;
        let ring = KeyRing {
            dir: dir.to_owned(),
            keys: RwLock::new(keys),
        };
        if ring.keys.read().map_err(|_| KeyError::Poisoned)?.is_empty() {
            ring.rotate()?;
        }
        Ok(ring)
    }

    /// Re-reads the directory (another replica sharing it may have rotated); returns
    /// whether the set of keys changed.
    pub fn reload(&self) -> Result<bool, KeyError> {
        let fresh = read_keys(&self.dir)?;
        let mut keys = self.keys.write().map_err(|_| KeyError::Poisoned)?;
        let same = fresh.len() == keys.len() && fresh.iter().zip(keys.iter()).all(|(a, b)| a.kid == b.kid);
        if !same {
            *keys = fresh;
        }
        Ok(!same)
    }

    /// Adds a new key that signs from now on; returns its key id.
    pub fn rotate(&self) -> Result<String, KeyError> {
        let mut keys = self.keys.write().map_err(|_| KeyError::Poisoned)?;
        let seq = keys.last().map_or(1, |k| k.seq + 1);
        let signing = SigningKey::generate(&mut rand::rngs::OsRng);
        let path = self.dir.join(format!("{seq:06}.ed25519"));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| KeyError::Io {
                path: path.clone(),
                source,
            })?;
        file.write_all(signing.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|source| KeyError::Io {
                path: path.clone(),
                source,
            })?;
        let key = Key::new(seq, signing)?;
        let kid = key.kid.clone();
        keys.push(key);
        tracing::info!(kid, "signing key created");
        Ok(kid)
    }

    pub fn active(&self) -> Result<ActiveKey, KeyError> {
        let keys = self.keys.read().map_err(|_| KeyError::Poisoned)?;
        let key = keys.last().ok_or(KeyError::Poisoned)?;
        Ok(ActiveKey {
            kid: key.kid.clone(),
            encoding: key.encoding.clone(),
        })
    }

    /// The public keys of every key in the ring.
    pub fn jwks(&self) -> Result<Jwks, KeyError> {
        let keys = self.keys.read().map_err(|_| KeyError::Poisoned)?;
        Ok(Jwks {
            keys: keys
                .iter()
                .map(|k| common::token::public_jwk(&k.kid, &k.signing.verifying_key()))
                .collect(),
        })
    }
}

impl Key {
    fn new(seq: u32, signing: SigningKey) -> Result<Self, KeyError> {
        let der = signing.to_pkcs8_der().map_err(|_| KeyError::Encode)?;
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        let kid = common::token::key_id(&signing.verifying_key());
        Ok(Key {
            seq,
            kid,
            signing,
            encoding,
        })
    }
}

/// Every key file in `dir`, oldest first.
fn read_keys(dir: &Path) -> Result<Vec<Key>, KeyError> {
    let io = |source| KeyError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut keys = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(seq) = name.strip_suffix(".ed25519").and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let bytes = fs::read(&path).map_err(|source| KeyError::Io {
            path: path.clone(),
            source,
        })?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| KeyError::BadKey(path.clone()))?;
        keys.push(Key::new(seq, SigningKey::from_bytes(&seed))?);
    }
    keys.sort_by_key(|k| k.seq);
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_persist_rotate_and_stay_private() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(dir.path()).unwrap();
        let first = ring.active().unwrap().kid;
        let second = ring.rotate().unwrap();
        assert_ne!(first, second);
        assert_eq!(ring.active().unwrap().kid, second);

        let reopened = KeyRing::open(dir.path()).unwrap();
        assert_eq!(reopened.active().unwrap().kid, second);
        let kids: Vec<String> = reopened.jwks().unwrap().keys.into_iter().map(|k| k.kid).collect();
        assert_eq!(kids, vec![first, second]);

        for entry in fs::read_dir(dir.path()).unwrap() {
            let mode = entry.unwrap().metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_ring_sees_a_rotation_made_by_another_replica() {
        let dir = tempfile::tempdir().unwrap();
        let one = KeyRing::open(dir.path()).unwrap();
        let two = KeyRing::open(dir.path()).unwrap();
        assert!(!one.reload().unwrap());
        let kid = two.rotate().unwrap();
        assert!(one.reload().unwrap());
        assert_eq!(one.active().unwrap().kid, kid);
        assert_eq!(one.jwks().unwrap().keys.len(), 2);
    }
}
