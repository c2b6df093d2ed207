//! Service-to-service identity. A calling service (the deploy service, the registry,
//! the gateway) holds a random credential in a file readable only by it; the services
//! it calls are given the same file and accept calls that present it. A user's token forwarded by a
//! service is never taken for the service's own authority: the credential travels in
//! its own metadata entries, apart from `authorization`.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tonic::metadata::{MetadataMap, MetadataValue};

/// Metadata entry naming the calling service.
pub const CALLER_HEADER: &str = "x-slipway-caller";
/// Metadata entry carrying the calling service's credential.
pub const CREDENTIAL_HEADER: &str = "x-slipway-credential";

/// Metadata entry in which the gateway names the address a login came from; the auth
/// service believes it only on calls carrying the gateway's credential.
pub const CLIENT_ADDRESS_HEADER: &str = "x-forwarded-for";

/// The deploy service's caller name.
pub const DEPLOY_SERVICE: &str = "deploy-service";
/// The registry service's caller name (it follows the revocation feed).
pub const REGISTRY_SERVICE: &str = "registry-service";
/// The gateway's caller name (it follows the revocation feed).
pub const GATEWAY: &str = "gateway";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("reading credential file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("writing credential file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("credential file {0} is empty or not one line of text")]
    Invalid(PathBuf),
}

/// A service's own credential. `Debug` never shows the secret.
#[derive(Clone)]
pub struct Credential {
    caller: String,
    secret: SecretString,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("caller", &self.caller)
            .field("secret", &"[redacted]")
            .finish()
    }
}

fn read_secret(path: &Path) -> Result<SecretString, IdentityError> {
    let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Read {
        path: path.to_owned(),
        source,
    })?;
    let secret = text.trim();
    if secret.is_empty() || secret.contains(char::is_whitespace) || secret.len() > 512 {
        return Err(IdentityError::Invalid(path.to_owned()));
    }
    Ok(SecretString::from(secret.to_owned()))
}

impl Credential {
    /// Reads `caller`'s credential from `path`.
    pub fn load(caller: &str, path: &Path) -> Result<Self, IdentityError> {
        Ok(Credential {
            caller: caller.to_owned(),
            secret: read_secret(path)?,
        })
    }

    /// Writes a new random credential to `path` (mode 0600) unless the file exists.
    pub fn create_if_missing(path: &Path) -> Result<(), IdentityError> {
        if path.exists() {
            return Ok(());
        }
        let write_err = |source| IdentityError::Write {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(dir).map_err(write_err)?;
        }
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(write_err)?;
        writeln!(file, "{}", URL_SAFE_NO_PAD.encode(bytes)).map_err(write_err)?;
        Ok(())
    }

    /// Adds this credential to a request's metadata.
    pub fn attach(&self, metadata: &mut MetadataMap) {
        if let (Ok(caller), Ok(secret)) = (
            MetadataValue::try_from(self.caller.as_str()),
            MetadataValue::try_from(self.secret.expose_secret()),
        ) {
            metadata.insert(CALLER_HEADER, caller);
            metadata.insert(CREDENTIAL_HEADER, secret);
        }
    }

    /// A request carrying this credential.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        self.attach(request.metadata_mut());
        request
    }
}

/// A service whose calls are accepted when they carry its credential. Only a digest
/// of the credential is kept.
#[derive(Clone)]
pub struct TrustedCaller {
    caller: String,
    digest: [u8; 32],
}

impl std::fmt::Debug for TrustedCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedCaller").field("caller", &self.caller).finish()
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl TrustedCaller {
    pub fn load(caller: &str, path: &Path) -> Result<Self, IdentityError> {
        let secret = read_secret(path)?;
        Ok(TrustedCaller {
            caller: caller.to_owned(),
            digest: digest(secret.expose_secret()),
        })
    }

    pub fn name(&self) -> &str {
        &self.caller
    }

    /// Whether the metadata carries this caller's credential. Comparing digests keeps
    /// the comparison's timing independent of the secret.
    pub fn is_caller(&self, metadata: &MetadataMap) -> bool {
        self.presented_in(metadata.as_ref())
    }

    /// Whether the request headers carry this caller's credential.
    pub fn presented_in(&self, metadata: &http::HeaderMap) -> bool {
        let named = metadata
            .get(CALLER_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c == self.caller);
        let presented = metadata
            .get(CREDENTIAL_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(digest);
        named && presented.is_some_and(|d| d.iter().zip(self.digest.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_credential_and_caller_pass_and_debug_hides_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deploy.key");
        Credential::create_if_missing(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let credential = Credential::load(DEPLOY_SERVICE, &path).unwrap();
        let trusted = TrustedCaller::load(DEPLOY_SERVICE, &path).unwrap();
        let secret = std::fs::read_to_string(&path).unwrap();
        assert!(!format!("{credential:?}").contains(secret.trim()));

        let request = credential.request(());
        assert!(trusted.is_caller(request.metadata()));

        let other = dir.path().join("other.key");
        Credential::create_if_missing(&other).unwrap();
        let wrong = Credential::load(DEPLOY_SERVICE, &other).unwrap();
        assert!(!trusted.is_caller(wrong.request(()).metadata()));
        let renamed = Credential::load("registry-service", &path).unwrap();
        assert!(!trusted.is_caller(renamed.request(()).metadata()));
        assert!(!trusted.is_caller(tonic::Request::new(()).metadata()));
    }
}
