//! The signing keys: Ed25519, kept in the auth database (`signing_keys`), each
//! private key sealed under the key-encryption key (`kek`). The key of the highest
//! generation signs; every key verifies, so tokens signed before a rotation stay
//! valid until they expire. Every replica on the database signs and verifies alike:
//! a rotation is a compare-and-swap on the next generation, and the others read the
//! keys again when told (PostgreSQL `NOTIFY`), every [`RELOAD_INTERVAL`], or when a
//! token names a key they do not know.
//!
//! Deployments from before keys moved to the database had one file per key in a
//! keys directory: on the first start with an empty table those files are imported,
//! so tokens they signed stay valid.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use common::{
    coalesce::Coalesced,
    token::{Claims, TokenError, Verifier},
};
use ed25519_dalek::{SigningKey, pkcs8::EncodePrivateKey};
use jsonwebtoken::EncodingKey;
use proto::auth::v1::Jwks;
use secrecy::ExposeSecret;

use crate::{
    kek::{Kek, KekError},
    storage::{Store, StoreError, signing_keys},
};

/// How often the keys are read again when nothing said they changed.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// The least time between two reads caused by unknown key ids or key-set requests.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(100);
/// Attempts at a rotation that keeps losing the race to other replicas.
const ROTATE_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("legacy key store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("legacy key file {0} is not an Ed25519 key")]
    BadKey(PathBuf),
    #[error(
        "the key-encryption key does not open signing key {kid} in the database: is this the key-encryption key \
         the other replicas use (--key-encryption-key-file / SLIPWAY_KEK_FILE)?"
    )]
    WrongKek { kid: String },
    #[error("signing key {0} in the database is damaged")]
    Damaged(String),
    #[error(transparent)]
    Kek(#[from] KekError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot encode signing key")]
    Encode,
    #[error("no signing key")]
    Empty,
    #[error("other replicas kept rotating the keys; try again")]
    Contended,
}

struct Key {
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
    store: Store,
    kek: Kek,
    keys: RwLock<Vec<Arc<Key>>>,
    /// Checks tokens against every key of the ring; kept in step with it.
    verifier: Arc<Verifier>,
    refreshes: Coalesced,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Loads the keys from the database. With none there yet, imports the key files
    /// of `legacy_dir` if it has any, else creates a first key. Fails when `kek` does
    /// not open every key (a wrong key-encryption key).
    pub async fn open(store: Store, kek: Kek, legacy_dir: &Path) -> Result<Self, KeyError> {
        let ring = KeyRing {
            store,
            kek,
            keys: RwLock::new(Vec::new()),
            verifier: Arc::new(Verifier::new(common::ISSUER, common::AUDIENCE)),
            refreshes: Coalesced::new(MIN_REFRESH_INTERVAL),
        };
        if ring.store.signing_keys().await?.is_empty() {
            let legacy = read_legacy_keys(legacy_dir)?;
            let rows = if legacy.is_empty() {
                vec![ring.seal(1, &SigningKey::generate(&mut rand::rngs::OsRng))?]
            } else {
                legacy
                    .iter()
                    .map(|(generation, key)| ring.seal(*generation, key))
                    .collect::<Result<_, _>>()?
            };
            let count = rows.len();
            // Another replica starting at the same time may win; its keys are read below.
            if ring.store.add_signing_keys(rows).await? {
                if legacy.is_empty() {
                    tracing::info!("first signing key created");
                } else {
                    tracing::info!(
                        keys = count,
                        dir = %legacy_dir.display(),
                        "signing keys imported from the keys dir into the database; the dir is no longer read"
                    );
                }
            }
        }
        ring.reload().await?;
        Ok(ring)
    }

    /// The verifier that follows this ring's keys.
    pub fn verifier(&self) -> Arc<Verifier> {
        self.verifier.clone()
    }

    /// Reads the keys again (another replica may have rotated); returns whether the
    /// set changed. Keys already known are not opened again.
    pub async fn reload(&self) -> Result<bool, KeyError> {
        let rows = self.store.signing_keys().await?;
        let known = self.snapshot();
        if rows.is_empty() {
            return Err(KeyError::Empty);
        }
        if rows.len() == known.len() && rows.iter().zip(&known).all(|(r, k)| r.kid == k.kid) {
            return Ok(false);
        }
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            match known.iter().find(|k| k.kid == row.kid) {
                Some(key) => keys.push(key.clone()),
                None => keys.push(Arc::new(self.unseal(&row)?)),
            }
        }
        let jwks = jwks_of(&keys);
        *self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = keys;
        self.verifier.set_keys(&jwks);
        Ok(true)
    }

    /// [`KeyRing::reload`] on behalf of every caller waiting, at most once per
    /// interval; answers once a read that started after the call is done.
    pub async fn refresh(&self) {
        self.refreshes
            .run(|| async {
                match self.reload().await {
                    Ok(true) => tracing::info!("signing keys read again: the set changed"),
                    Ok(false) => {}
                    Err(error) => tracing::error!(%error, "cannot read the signing keys"),
                }
            })
            .await;
    }

    /// Signature and claims against the ring's keys; a token naming a key not known
    /// here reads the keys again first (a rotation on another replica).
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        match self.verifier.verify(token) {
            Err(TokenError::UnknownKey) => {
                self.refresh().await;
                self.verifier.verify(token)
            }
            other => other,
        }
    }

    /// Adds a new key that signs from now on, on every replica; returns its key id.
    /// The next generation is claimed in the database: when another replica claimed
    /// it first, this one reads the keys and tries the generation after.
    pub async fn rotate(&self) -> Result<String, KeyError> {
        for _ in 0..ROTATE_ATTEMPTS {
            let newest = self.store.signing_keys().await?.last().map_or(0, |k| k.generation);
            let row = self.seal(newest + 1, &SigningKey::generate(&mut rand::rngs::OsRng))?;
            let kid = row.kid.clone();
            if self.store.add_signing_keys(vec![row]).await? {
                self.reload().await?;
                tracing::info!(kid, generation = newest + 1, "signing key created");
                return Ok(kid);
            }
        }
        Err(KeyError::Contended)
    }

    pub fn active(&self) -> Result<ActiveKey, KeyError> {
        let keys = self.snapshot();
        let key = keys.last().ok_or(KeyError::Empty)?;
        Ok(ActiveKey {
            kid: key.kid.clone(),
            encoding: key.encoding.clone(),
        })
    }

    /// The public keys of every key in the ring.
    pub fn jwks(&self) -> Jwks {
        jwks_of(&self.snapshot())
    }

    fn snapshot(&self) -> Vec<Arc<Key>> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn seal(&self, generation: i64, signing: &SigningKey) -> Result<signing_keys::Model, KeyError> {
        let kid = common::token::key_id(&signing.verifying_key());
        let sealed = self.kek.seal(&kid, signing.as_bytes())?;
        Ok(signing_keys::Model {
            kid,
            generation,
            public_key: URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes()),
            sealed_private_key: STANDARD.encode(sealed),
            created_at: chrono::Utc::now(),
        })
    }

    fn unseal(&self, row: &signing_keys::Model) -> Result<Key, KeyError> {
        let sealed = STANDARD
            .decode(&row.sealed_private_key)
            .map_err(|_| KeyError::Damaged(row.kid.clone()))?;
        let seed = self
            .kek
            .open(&row.kid, &sealed)
            .map_err(|_| KeyError::WrongKek { kid: row.kid.clone() })?;
        let seed: [u8; 32] = seed
            .expose_secret()
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Damaged(row.kid.clone()))?;
        let key = Key::new(SigningKey::from_bytes(&seed))?;
        if key.kid != row.kid {
            return Err(KeyError::Damaged(row.kid.clone()));
        }
        Ok(key)
    }
}

fn jwks_of(keys: &[Arc<Key>]) -> Jwks {
    Jwks {
        keys: keys
            .iter()
            .map(|k| common::token::public_jwk(&k.kid, &k.signing.verifying_key()))
            .collect(),
    }
}

impl Key {
    fn new(signing: SigningKey) -> Result<Self, KeyError> {
        let der = signing.to_pkcs8_der().map_err(|_| KeyError::Encode)?;
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        let kid = common::token::key_id(&signing.verifying_key());
        Ok(Key { kid, signing, encoding })
    }
}

/// The key files of a keys dir from before the database held the keys
/// (`000001.ed25519`, …: a 32-byte seed each), with their numbers, oldest first. A
/// missing dir has none.
fn read_legacy_keys(dir: &Path) -> Result<Vec<(i64, SigningKey)>, KeyError> {
    let io = |source| KeyError::Io {
        path: dir.to_owned(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut keys = Vec::new();
    for entry in entries {
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
        keys.push((i64::from(seq), SigningKey::from_bytes(&seed)));
    }
    keys.sort_by_key(|(seq, _)| *seq);
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::OpenOptionsExt;

    use super::*;

    async fn setup() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&common::db::sqlite_url(dir.path(), "auth.db"))
            .await
            .unwrap();
        Kek::create_if_missing(&dir.path().join("kek")).unwrap();
        (dir, store)
    }

    fn kek(dir: &Path) -> Kek {
        Kek::load(&dir.join("kek")).unwrap()
    }

    #[tokio::test]
    async fn keys_persist_rotate_and_are_shared_by_replicas() {
        let (dir, store) = setup().await;
        let legacy = dir.path().join("none");
        let one = KeyRing::open(store.clone(), kek(dir.path()), &legacy).await.unwrap();
        let two = KeyRing::open(store.clone(), kek(dir.path()), &legacy).await.unwrap();
        let first = one.active().unwrap().kid;
        assert_eq!(two.active().unwrap().kid, first, "one first key for both");

        let second = two.rotate().await.unwrap();
        assert_ne!(first, second);
        assert_eq!(one.active().unwrap().kid, first, "not read yet");
        assert!(one.reload().await.unwrap());
        assert_eq!(one.active().unwrap().kid, second);
        let kids: Vec<String> = one.jwks().keys.into_iter().map(|k| k.kid).collect();
        assert_eq!(kids, vec![first, second.clone()]);

        // Both rotate from the same view: each gets a generation of its own.
        let (a, b) = tokio::join!(one.rotate(), two.rotate());
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_ne!(a, b);
        let generations: Vec<i64> = store
            .signing_keys()
            .await
            .unwrap()
            .iter()
            .map(|k| k.generation)
            .collect();
        assert_eq!(generations, vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_wrong_kek_is_refused_and_no_private_key_is_stored_in_the_clear() {
        let (dir, store) = setup().await;
        let ring = KeyRing::open(store.clone(), kek(dir.path()), &dir.path().join("none"))
            .await
            .unwrap();
        let seed = ring.snapshot()[0].signing.to_bytes();
        for row in store.signing_keys().await.unwrap() {
            let sealed = STANDARD.decode(&row.sealed_private_key).unwrap();
            assert!(!sealed.windows(32).any(|w| w == seed));
            assert!(!row.sealed_private_key.contains(&STANDARD.encode(seed)));
        }
        Kek::create_if_missing(&dir.path().join("other")).unwrap();
        let other = Kek::load(&dir.path().join("other")).unwrap();
        let error = KeyRing::open(store, other, &dir.path().join("none")).await.unwrap_err();
        assert!(matches!(error, KeyError::WrongKek { .. }), "{error}");
    }

    #[tokio::test]
    async fn legacy_key_files_are_imported_once() {
        let (dir, store) = setup().await;
        let legacy = dir.path().join("auth-keys");
        fs::create_dir(&legacy).unwrap();
        let mut kids = Vec::new();
        for seq in [1u32, 2] {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            kids.push(common::token::key_id(&key.verifying_key()));
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(legacy.join(format!("{seq:06}.ed25519")))
                .unwrap();
            std::io::Write::write_all(&mut file, key.as_bytes()).unwrap();
        }
        let ring = KeyRing::open(store.clone(), kek(dir.path()), &legacy).await.unwrap();
        assert_eq!(ring.active().unwrap().kid, kids[1]);
        let listed: Vec<String> = ring.jwks().keys.into_iter().map(|k| k.kid).collect();
        assert_eq!(listed, kids);
        // Imported: a second start reads the database, not the files.
        fs::remove_dir_all(&legacy).unwrap();
        let again = KeyRing::open(store, kek(dir.path()), &legacy).await.unwrap();
        assert_eq!(again.active().unwrap().kid, kids[1]);
    }
}
