//! The credential identifier newtype.

use std::borrow::Borrow;
use std::fmt;

use smol_str::SmolStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::CredentialError;

/// The configured identifier of one credential (e.g. `"team-account"`).
///
/// Ids are the only per-credential value that appears in logs, events, metric labels and exports, so
/// they must never be a token or an e-mail address. An id is non-empty, at most 128 bytes, and has no
/// control characters; [`CredentialId::new`] enforces that.
///
/// Cloning is cheap and, for an id of up to 23 bytes, writes no shared memory: such an id is held
/// inline ([`SmolStr`]), a longer one behind a reference count. Every call a pool serves returns
/// its credential's id (in `oauth_manager::Served`): two threads serving from one credential
/// would otherwise write the same reference count on every call.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialId(SmolStr);

impl CredentialId {
    /// The longest id accepted, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Validates and wraps an id.
    ///
    /// # Errors
    /// [`CredentialError::InvalidId`] when the id is empty, too long or holds control characters.
    pub fn new(id: impl AsRef<str>) -> Result<Self, CredentialError> {
        let id = id.as_ref();
        if id.is_empty() || id.len() > Self::MAX_LEN || id.chars().any(char::is_control) {
            return Err(CredentialError::InvalidId {
                len: id.len(),
                max: Self::MAX_LEN,
            });
        }
        Ok(Self(SmolStr::new(id)))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for CredentialId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for CredentialId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for CredentialId {
    type Error = CredentialError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<String> for CredentialId {
    type Error = CredentialError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl PartialEq<str> for CredentialId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for CredentialId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl Serialize for CredentialId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CredentialId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_long_and_control() {
        assert!(CredentialId::new("").is_err());
        assert!(CredentialId::new("a".repeat(129)).is_err());
        assert!(CredentialId::new("a\nb").is_err());
        assert_eq!(
            CredentialId::new("team").unwrap_or_else(|e| panic!("{e}")),
            "team"
        );
    }

    #[test]
    fn serde_is_a_plain_string_and_validates() {
        let id = CredentialId::new("acct-1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            serde_json::to_string(&id).ok().as_deref(),
            Some("\"acct-1\"")
        );
        assert!(serde_json::from_str::<CredentialId>("\"\"").is_err());
    }
}
