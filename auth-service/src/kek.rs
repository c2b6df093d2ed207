//! The key-encryption key (KEK): 32 random bytes, base64 in a file (a Kubernetes
//! secret, or one `slipway up` writes with mode 0600), that seals the private signing
//! keys stored in the auth database. XChaCha20-Poly1305 with a random nonce per key and
//! the key id as associated data, so a sealed key cannot be passed off as another.
//! The KEK itself never appears in logs, errors or `Debug`.

use std::{
    fs,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, KeyInit, Payload},
};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox};

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum KekError {
    #[error("key-encryption key file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("key-encryption key file {0}: not 32 bytes in base64 (make one with `head -c 32 /dev/urandom | base64`)")]
    Format(PathBuf),
    #[error("a sealed signing key cannot be opened with this key-encryption key")]
    Open,
    #[error("cannot seal a signing key")]
    Seal,
}

pub struct Kek(SecretBox<[u8; KEY_LEN]>);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek([redacted])")
    }
}

impl Kek {
    /// Reads the KEK from `path` (base64 of 32 bytes; surrounding whitespace ignored).
    pub fn load(path: &Path) -> Result<Self, KekError> {
        let text = fs::read_to_string(path).map_err(|source| KekError::Io {
            path: path.to_owned(),
            source,
        })?;
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| KekError::Format(path.to_owned()))?;
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|_| KekError::Format(path.to_owned()))?;
        Ok(Kek(SecretBox::new(Box::new(key))))
    }

    /// Writes a new random KEK to `path` (mode 0600) unless the file exists.
    pub fn create_if_missing(path: &Path) -> Result<(), KekError> {
        let io = |source| KekError::Io {
            path: path.to_owned(),
            source,
        };
        let mut key = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let mut file = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(io(e)),
        };
        file.write_all(format!("{}\n", STANDARD.encode(key)).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&(*self.0.expose_secret()).into())
    }

    /// Seals `secret` (a private key) under this KEK, bound to `kid`: nonce, then
    /// ciphertext and tag.
    pub fn seal(&self, kid: &str, secret: &[u8]) -> Result<Vec<u8>, KekError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: secret,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| KekError::Seal)?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`Kek::seal`] sealed for `kid`; fails with another KEK, another
    /// key id, or altered bytes.
    pub fn open(&self, kid: &str, sealed: &[u8]) -> Result<SecretBox<Vec<u8>>, KekError> {
        if sealed.len() < NONCE_LEN {
            return Err(KekError::Open);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| KekError::Open)?;
        let plain = self
            .cipher()
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: body,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| KekError::Open)?;
        Ok(SecretBox::new(Box::new(plain)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(dir: &Path, name: &str) -> Kek {
        let path = dir.join(name);
        Kek::create_if_missing(&path).unwrap();
        Kek::load(&path).unwrap()
    }

    #[test]
    fn seals_and_opens_only_with_the_same_kek_and_key_id() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (kek(dir.path(), "a"), kek(dir.path(), "b"));
        let sealed = one.seal("kid-1", b"private seed").unwrap();
        assert!(!sealed.windows(12).any(|w| w == b"private seed"));
        assert_eq!(one.open("kid-1", &sealed).unwrap().expose_secret(), b"private seed");
        assert!(matches!(two.open("kid-1", &sealed), Err(KekError::Open)));
        assert!(matches!(one.open("kid-2", &sealed), Err(KekError::Open)));
        assert!(matches!(one.open("kid-1", &sealed[..10]), Err(KekError::Open)));
        assert_eq!(format!("{one:?}"), "Kek([redacted])");
    }

    #[test]
    fn the_file_is_private_kept_and_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        Kek::create_if_missing(&path).unwrap();
        let first = fs::read(&path).unwrap();
        Kek::create_if_missing(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), first, "an existing KEK is kept");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        fs::write(&path, "c2hvcnQ=").unwrap();
        let error = Kek::load(&path).unwrap_err().to_string();
        assert!(error.contains("not 32 bytes"), "{error}");
    }
}
