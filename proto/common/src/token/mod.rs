//! Slipway tokens: the claims every token carries, JWK handling, and the one verifier
//! every service and the gateway use.

mod claims;
mod jwk;
mod remote;
#[cfg(test)]
pub(crate) mod testing;
mod verify;

pub use claims::{Claims, TokenType};
pub use jwk::{decoding_key, key_id, public_jwk};
pub use remote::RemoteVerifier;
pub use verify::{LEEWAY_SECS, MAX_TOKEN_LEN, TokenError, Verifier, bearer_token};
