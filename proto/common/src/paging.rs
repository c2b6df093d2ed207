//! Page tokens and page sizes for every list RPC, in one place.
//!
//! A page token is opaque to callers: URL-safe base64 (no padding) of
//! `"<version>:<list>:<key>"`, where the key is the typed cursor of that list (the last
//! row of the previous page, for keyset pagination). A token made by another list, by
//! another version, or changed by hand does not decode, and the RPC answers
//! INVALID_ARGUMENT without reading anything.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::error::ErrorCode;

/// The version of the token format; older or newer tokens are refused.
const VERSION: &str = "1";
/// Longest token accepted (cursors are a few dozen characters).
const MAX_TOKEN_LEN: usize = 512;

/// Page sizes of one list: `default` when the caller asks for none (0), at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize {
    pub default: u32,
    pub max: u32,
}

impl PageSize {
    /// The page size to use for a requested one.
    pub fn of(self, requested: u32) -> u32 {
        match requested {
            0 => self.default,
            n => n.min(self.max),
        }
    }
}

/// `ListDeployments`.
pub const DEPLOYMENTS: PageSize = PageSize {
    default: 100,
    max: 1000,
};
/// `ListServices`: the whole list (up to the cap) when no size is asked for.
pub const SERVICES: PageSize = PageSize {
    default: 1000,
    max: 1000,
};
/// `ListTokens`.
pub const TOKENS: PageSize = PageSize {
    default: 100,
    max: 1000,
};

/// `ListUsers`.
pub const USERS: PageSize = PageSize {
    default: 100,
    max: 1000,
};

/// The position after which one list's next page starts.
pub trait Cursor: Sized {
    /// The list's name, written into its tokens so no other list accepts them.
    const LIST: &'static str;
    /// The cursor as text (any characters).
    fn to_key(&self) -> String;
    /// The cursor from its text, or `None` when the text is not one `to_key` made.
    fn from_key(key: &str) -> Option<Self>;
}

/// A page token that this list did not give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("page_token is not one this list gave")]
pub struct InvalidPageToken;

impl From<InvalidPageToken> for tonic::Status {
    fn from(error: InvalidPageToken) -> tonic::Status {
        ErrorCode::InvalidArgument.status(error.to_string())
    }
}

/// The page token of the page after `cursor`.
pub fn encode<C: Cursor>(cursor: &C) -> String {
    URL_SAFE_NO_PAD.encode(format!("{VERSION}:{}:{}", C::LIST, cursor.to_key()))
}

/// The cursor in a page token: `None` for the empty token (the first page).
pub fn decode<C: Cursor>(token: &str) -> Result<Option<C>, InvalidPageToken> {
    if token.is_empty() {
        return Ok(None);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(InvalidPageToken);
    }
    let plain = URL_SAFE_NO_PAD.decode(token).map_err(|_| InvalidPageToken)?;
    let plain = String::from_utf8(plain).map_err(|_| InvalidPageToken)?;
    let mut parts = plain.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(VERSION), Some(list), Some(key)) if list == C::LIST => C::from_key(key).map(Some).ok_or(InvalidPageToken),
        _ => Err(InvalidPageToken),
    }
}

/// Keyset cursor of `ListServices` (ascending id order): the last id of the previous
/// page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServicesCursor(pub i64);

impl Cursor for ServicesCursor {
    const LIST: &'static str = "services";

    fn to_key(&self) -> String {
        self.0.to_string()
    }

    fn from_key(key: &str) -> Option<Self> {
        canonical_u63(key).map(ServicesCursor)
    }
}

/// Keyset cursor of `ListUsers` (ascending name order): the last name of the
/// previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsersCursor(pub String);

impl Cursor for UsersCursor {
    const LIST: &'static str = "users";

    fn to_key(&self) -> String {
        self.0.clone()
    }

    fn from_key(key: &str) -> Option<Self> {
        (!key.is_empty()).then(|| UsersCursor(key.to_owned()))
    }
}

/// A fingerprint of a list's filters (each given as text), for its page tokens: a
/// token names the filters of the list that gave it, so another list's page is never
/// read by mistake. 0 when every part is empty; otherwise 1 to 2^63 - 1.
pub fn fingerprint(parts: &[&str]) -> i64 {
    use sha2::{Digest, Sha256};
    if parts.iter().all(|p| p.is_empty()) {
        return 0;
    }
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    ((u64::from_be_bytes(first) >> 1) as i64).max(1)
}

/// A non-negative integer written as `to_string` writes it (no sign, no leading
/// zeros), so that one cursor has one token.
pub fn canonical_u63(text: &str) -> Option<i64> {
    let n: i64 = text.parse().ok()?;
    (n >= 0 && n.to_string() == text).then_some(n)
}

/// One page of `rows` fetched with one row more than `size`: the page, and the token
/// of the next one (empty when this is the last), made from the page's last row.
pub fn split_page<T, C: Cursor>(mut rows: Vec<T>, size: u32, cursor: impl Fn(&T) -> C) -> (Vec<T>, String) {
    let size = size as usize;
    if rows.len() <= size {
        return (rows, String::new());
    }
    rows.truncate(size);
    let next = rows.last().map(|last| encode(&cursor(last))).unwrap_or_default();
    (rows, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another list's cursor, with any key.
    #[derive(Debug, PartialEq)]
    struct Other(String);

    impl Cursor for Other {
        const LIST: &'static str = "other";
        fn to_key(&self) -> String {
            self.0.clone()
        }
        fn from_key(key: &str) -> Option<Self> {
            Some(Other(key.to_owned()))
        }
    }

    #[test]
    fn cursors_round_trip_and_are_opaque() {
        let token = encode(&ServicesCursor(42));
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(token, "42");
        assert_eq!(decode::<ServicesCursor>(&token), Ok(Some(ServicesCursor(42))));
        assert_eq!(decode::<ServicesCursor>(""), Ok(None));
        assert_eq!(
            decode::<Other>(&encode(&Other("a:b".into()))),
            Ok(Some(Other("a:b".into())))
        );
    }

    #[test]
    fn a_token_of_another_list_or_changed_is_refused() {
        let other = encode(&Other("7".into()));
        assert_eq!(decode::<ServicesCursor>(&other), Err(InvalidPageToken));
        assert_eq!(decode::<Other>(&encode(&ServicesCursor(7))), Err(InvalidPageToken));
        let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
        for bad in [
            "42".to_owned(),
            "garbage!".into(),
            b64("not-a-cursor"),
            b64("2:services:7"),
            b64("1:services:"),
            b64("1:services:-7"),
            b64("1:services:007"),
            b64("1:services:+7"),
            b64("1:services:7x"),
            b64("1:services:99999999999999999999"),
            format!("{}=", encode(&ServicesCursor(7))),
            "A".repeat(10_000),
        ] {
            assert_eq!(decode::<ServicesCursor>(&bad), Err(InvalidPageToken), "{bad:?}");
        }
        let status = tonic::Status::from(InvalidPageToken);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "page_token is not one this list gave");
    }

    #[test]
    fn users_cursors_hold_any_name() {
        let cursor = UsersCursor("a:b c/é".into());
        assert_eq!(decode::<UsersCursor>(&encode(&cursor)), Ok(Some(cursor)));
        let empty = URL_SAFE_NO_PAD.encode("1:users:");
        assert_eq!(decode::<UsersCursor>(&empty), Err(InvalidPageToken));
        assert_eq!(
            decode::<UsersCursor>(&encode(&ServicesCursor(7))),
            Err(InvalidPageToken)
        );
    }

    #[test]
    fn fingerprints_tell_filters_apart() {
        assert_eq!(fingerprint(&[]), 0);
        assert_eq!(fingerprint(&["", "", ""]), 0, "no filter");
        let some = [
            fingerprint(&["a", ""]),
            fingerprint(&["", "a"]),
            fingerprint(&["ab", ""]),
            fingerprint(&["a", "b"]),
            fingerprint(&["ab", "b"]),
        ];
        for (i, f) in some.iter().enumerate() {
            assert!(*f > 0, "{f}");
            assert_eq!(canonical_u63(&f.to_string()), Some(*f));
            assert!(some[i + 1..].iter().all(|other| other != f), "{some:?}");
        }
        assert_eq!(fingerprint(&["a", "b"]), some[3], "the same filters, the same print");
    }

    #[test]
    fn page_sizes_default_and_cap() {
        assert_eq!(DEPLOYMENTS.of(0), 100);
        assert_eq!(DEPLOYMENTS.of(7), 7);
        assert_eq!(DEPLOYMENTS.of(u32::MAX), 1000);
        assert_eq!(SERVICES.of(0), 1000);
        assert_eq!(TOKENS.of(0), 100);
        assert_eq!(USERS.of(0), 100);
        assert_eq!(USERS.of(5000), 1000);
    }

    #[test]
    fn pages_split_one_row_past_the_size() {
        assert_eq!(
            split_page(vec![1, 2], 2, |id: &i64| ServicesCursor(*id)),
            (vec![1, 2], String::new())
        );
        let (rows, next) = split_page(vec![1, 2, 3], 2, |id: &i64| ServicesCursor(*id));
        assert_eq!(rows, [1, 2]);
        assert_eq!(decode::<ServicesCursor>(&next), Ok(Some(ServicesCursor(2))));
    }
}
