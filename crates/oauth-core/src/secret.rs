//! Secret values: access tokens, refresh tokens, client secrets.
//!
//! [`SecretString`] (from the `secrecy` crate) has a redacted `Debug`, no `Display`, no `Serialize`,
//! and is zeroized on drop. Reading one takes an explicit [`ExposeSecret::expose_secret`] call, which
//! makes every place a secret leaves the process easy to find with a search.

pub use secrecy::{ExposeSecret, SecretString};

/// Serde helpers for the places that persist secrets on purpose (stores, the token server fake).
///
/// Use as `#[serde(serialize_with = "oauth_core::secret::serde_expose::serialize")]` on a
/// `SecretString` field of a storage-only type.
pub mod serde_expose {
    use secrecy::{ExposeSecret, SecretString};
    use serde::Serializer;

    /// Serializes the secret's value in clear text.
    ///
    /// # Errors
    /// Whatever the serializer returns.
    pub fn serialize<S: Serializer>(
        secret: &SecretString,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(secret.expose_secret())
    }

    /// Serializes an optional secret's value in clear text.
    ///
    /// # Errors
    /// Whatever the serializer returns.
    pub fn serialize_option<S: Serializer>(
        secret: &Option<SecretString>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match secret {
            Some(s) => serializer.serialize_some(s.expose_secret()),
            None => serializer.serialize_none(),
        }
    }
}

/// Compares two secrets without exposing them to the caller (not constant-time; not for verification
/// of attacker-supplied values).
pub fn same_secret(a: &SecretString, b: &SecretString) -> bool {
    a.expose_secret() == b.expose_secret()
}
