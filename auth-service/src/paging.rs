//! ListTokens pages. Tokens are listed newest first (creation time, then id, both
//! descending); a page token names the last token of the previous page by that key
//! (keyset pagination), so pages never skip or repeat a token while others are minted.
//! The token is opaque to callers (URL-safe base64); one this service did not give is
//! INVALID_ARGUMENT.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};

use crate::storage::{Store, StoreError, TokenFilter, tokens};

/// Tokens per page when the caller asks for none (0).
pub const DEFAULT_PAGE: u32 = 100;
/// The largest page; bigger requests get this many.
pub const MAX_PAGE: u32 = 1000;
/// Token ids are UUIDs; anything much longer did not come from this service.
const MAX_ID_LEN: usize = 128;

/// Where a page starts: just after the token with this creation time and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: String,
}

impl Cursor {
    /// `"<seconds>.<nanoseconds>:<id>"`, base64url without padding.
    pub fn encode(&self) -> String {
        let plain = format!(
            "{}.{:09}:{}",
            self.created_at.timestamp(),
            self.created_at.timestamp_subsec_nanos(),
            self.id
        );
        URL_SAFE_NO_PAD.encode(plain)
    }

    /// The cursor in a page token, or `None` when the text is not one `encode` made.
    pub fn decode(token: &str) -> Option<Cursor> {
        if token.len() > 4 * MAX_ID_LEN {
            return None;
        }
        let plain = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
        let (at, id) = plain.split_once(':')?;
        let (seconds, nanos) = at.split_once('.')?;
        if nanos.len() != 9 || id.is_empty() || id.len() > MAX_ID_LEN {
            return None;
        }
        let created_at = DateTime::from_timestamp(seconds.parse().ok()?, nanos.parse().ok()?)?;
        Some(Cursor {
            created_at,
            id: id.to_owned(),
        })
    }
}

/// The page size to use for a requested one.
pub fn page_size(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

/// One page of the tokens matching `filter`, after `after`, and the page token of the
/// next page (empty when this is the last).
pub async fn page(
    store: &Store,
    filter: &TokenFilter,
    after: Option<&Cursor>,
    requested_size: u32,
) -> Result<(Vec<tokens::Model>, String), StoreError> {
    let size = page_size(requested_size) as usize;
    // One more than the page says whether another page follows.
    let mut rows = store.list_tokens_page(filter, after, Some(size as u64 + 1)).await?;
    let mut next_page_token = String::new();
    if rows.len() > size {
        rows.truncate(size);
        if let Some(last) = rows.last() {
            next_page_token = Cursor {
                created_at: last.created_at,
                id: last.id.clone(),
            }
            .encode();
        }
    }
    Ok((rows, next_page_token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_to_the_nanosecond() {
        let created_at = DateTime::from_timestamp(1_767_225_600, 123_456_789).unwrap();
        let cursor = Cursor {
            created_at,
            id: "0b8e6f0e-2f6a-4c55-9d51-0c1f3b0f6c2a".into(),
        };
        let token = cursor.encode();
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(Cursor::decode(&token), Some(cursor));
        let whole_second = Cursor {
            created_at: DateTime::from_timestamp(0, 0).unwrap(),
            id: "x".into(),
        };
        assert_eq!(Cursor::decode(&whole_second.encode()), Some(whole_second));
    }

    #[test]
    fn anything_else_is_refused() {
        let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
        for bad in [
            String::new(),
            "garbage!".into(),
            "42".into(),
            b64("no-separator"),
            b64("12.123456789:"),
            b64("12.12345:id"),
            b64("twelve.123456789:id"),
            b64("12.999999999999:id"),
            b64(&format!("12.123456789:{}", "x".repeat(MAX_ID_LEN + 1))),
            "A".repeat(10_000),
        ] {
            assert_eq!(Cursor::decode(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn page_sizes_default_and_cap() {
        assert_eq!(page_size(0), DEFAULT_PAGE);
        assert_eq!(page_size(7), 7);
        assert_eq!(page_size(u32::MAX), MAX_PAGE);
    }
}
