//! The management API's bearer token: read from a file, compared in constant time.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ConfigError;

/// The shortest token accepted (a guessable token would make the API open).
pub const MIN_TOKEN_LEN: usize = 16;

/// The bearer token, kept only as its SHA-256 digest. Comparing digests makes the comparison
/// constant-time in the presented value's length as well as its content. `Debug` shows nothing.
#[derive(Clone)]
pub struct BearerToken {
    digest: [u8; 32],
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl BearerToken {
    /// Reads the token from `path` (surrounding whitespace trimmed). The file must not be
    /// readable by other users and must hold at least [`MIN_TOKEN_LEN`] visible ASCII characters.
    ///
    /// # Errors
    /// [`ConfigError::BadFile`] naming `token_file` and the path, never the content.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let bad = |reason| ConfigError::BadFile {
            key: "token_file".into(),
            path: path.to_path_buf(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|_| bad("cannot be read"))?;
        if meta.permissions().mode() & 0o007 != 0 {
            return Err(bad("is accessible to other users (chmod 600 it)"));
        }
        let bytes = std::fs::read(path).map_err(|_| bad("cannot be read"))?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| bad("is not text"))?
            .trim();
        if text.len() < MIN_TOKEN_LEN {
            return Err(bad("holds a token shorter than 16 characters"));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("holds a token with spaces or non-ASCII characters"));
        }
        Ok(Self::from_secret(text))
    }

    /// A token from its value.
    pub fn from_secret(token: &str) -> Self {
        Self {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Whether an `Authorization` header value is `Bearer <this token>`, in constant time.
    pub fn matches_header(&self, header: Option<&[u8]>) -> bool {
        let presented = header
            .and_then(|h| {
                let (scheme, rest) = h.split_at_checked(7)?;
                scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
            })
            .unwrap_or(b"");
        let digest: [u8; 32] = Sha256::digest(presented).into();
        bool::from(digest.ct_eq(&self.digest)) && header.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_token() {
        let t = BearerToken::from_secret("0123456789abcdef-token");
        assert!(t.matches_header(Some(b"Bearer 0123456789abcdef-token")));
        assert!(t.matches_header(Some(b"bearer 0123456789abcdef-token")));
        assert!(!t.matches_header(Some(b"Bearer 0123456789abcdef-toke")));
        assert!(!t.matches_header(Some(b"0123456789abcdef-token")));
        assert!(!t.matches_header(None));
        assert!(!format!("{t:?}").contains("0123"));
    }
}
