//! PKCE (RFC 7636) with the `S256` method, random `state` values, and a constant-time comparison.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oauth_core::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::SigninError;

/// A PKCE pair: the secret `code_verifier` and its public `S256` `code_challenge`.
///
/// ```
/// use oauth_signin::Pkce;
/// // The example of RFC 7636 appendix B.
/// let pkce = Pkce::from_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")?;
/// assert_eq!(pkce.challenge(), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
/// assert!(!format!("{pkce:?}").contains("dBjftJeZ"));
/// # Ok::<(), oauth_signin::SigninError>(())
/// ```
#[derive(Clone)]
pub struct Pkce {
    verifier: SecretString,
    challenge: String,
}

impl Pkce {
    /// The only challenge method this crate sends (`plain` is not offered: RFC 7636 section 7.2).
    pub const METHOD: &'static str = "S256";

    /// A fresh pair: 32 random bytes, base64url-encoded (43 characters, the RFC's recommendation).
    ///
    /// # Errors
    /// [`SigninError::Random`] when the system random source fails.
    pub fn generate() -> Result<Self, SigninError> {
        let verifier = random_token(32)?;
        Ok(Self::from_valid(verifier))
    }

    /// A pair from a verifier the caller chose (tests, or a verifier kept across a restart).
    ///
    /// # Errors
    /// [`SigninError::Config`] unless the verifier is 43 to 128 characters of
    /// `[A-Za-z0-9-._~]` (RFC 7636 section 4.1).
    pub fn from_verifier(verifier: impl Into<String>) -> Result<Self, SigninError> {
        let verifier = verifier.into();
        let valid = (43..=128).contains(&verifier.len())
            && verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        if !valid {
            return Err(SigninError::Config {
                what: "a PKCE verifier is 43 to 128 unreserved characters",
            });
        }
        Ok(Self::from_valid(verifier))
    }

    fn from_valid(verifier: String) -> Self {
        let challenge = challenge_of(&verifier);
        Self {
            verifier: SecretString::from(verifier),
            challenge,
        }
    }

    /// The `code_challenge` (public: it goes into the authorization URL).
    pub fn challenge(&self) -> &str {
        &self.challenge
    }

    /// The `code_verifier` (secret: it goes only to the token endpoint).
    pub const fn verifier(&self) -> &SecretString {
        &self.verifier
    }
}

impl fmt::Debug for Pkce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkce")
            .field("verifier", &"[REDACTED]")
            .field("challenge", &self.challenge)
            .finish()
    }
}

/// `BASE64URL(SHA256(verifier))` without padding: the `S256` challenge of `verifier`.
pub fn challenge_of(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// `n` random bytes, base64url-encoded without padding.
pub(crate) fn random_token(n: usize) -> Result<String, SigninError> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|_| SigninError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Compares a presented value with the expected secret in time independent of where they differ.
pub(crate) fn constant_time_eq(presented: &str, expected: &SecretString) -> bool {
    presented
        .as_bytes()
        .ct_eq(expected.expose_secret().as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pairs_are_fresh_and_valid() {
        let a = Pkce::generate().expect("random source");
        let b = Pkce::generate().expect("random source");
        assert_eq!(a.verifier().expose_secret().len(), 43);
        assert_ne!(a.verifier().expose_secret(), b.verifier().expose_secret());
        assert_eq!(a.challenge(), challenge_of(a.verifier().expose_secret()));
        assert!(Pkce::from_verifier(a.verifier().expose_secret()).is_ok());
    }

    #[test]
    fn bad_verifiers_are_refused() {
        assert!(Pkce::from_verifier("short").is_err());
        assert!(Pkce::from_verifier("a".repeat(129)).is_err());
        assert!(Pkce::from_verifier(format!("{}+", "a".repeat(43))).is_err());
    }

    #[test]
    fn constant_time_comparison() {
        let secret = SecretString::from("state-value".to_owned());
        assert!(constant_time_eq("state-value", &secret));
        assert!(!constant_time_eq("state-valuE", &secret));
        assert!(!constant_time_eq("state", &secret));
        assert!(!constant_time_eq("", &secret));
    }
}
