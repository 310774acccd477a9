//! Standard Webhooks signatures: signing deliveries and verifying them on the receiving side.
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{body}`, the MAC is HMAC-SHA256 keyed
//! with the secret's bytes, and `webhook-signature` is a space-separated list of `v1,<base64>`
//! (one per secret, so a receiver can rotate its secret without downtime).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

use crate::config::WebhookSecret;

/// Header carrying the event id (stable across retries).
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the Unix time of the attempt, in seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying the signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// The timestamp tolerance the reference libraries use (5 minutes).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &WebhookSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = secret.mac();
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `v1,<base64>` signature of one delivery attempt under one secret.
pub fn sign(secret: &WebhookSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, msg_id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(tag))
}

/// The `webhook-signature` header value: one signature per secret, space-separated.
pub fn sign_all(secrets: &[WebhookSecret], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| sign(s, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where [`verify`] reads the three headers from.
///
/// Implemented for `http::HeaderMap` (as used by axum, hyper and reqwest; with the `http`
/// feature), for [`SignatureHeaders`] and for slices of name/value pairs.
pub trait HeaderLookup {
    /// The value of header `name` (lower-case), if present and valid text.
    fn header(&self, name: &str) -> Option<&str>;
}

/// The three Standard Webhooks header values, for callers that hold them already.
#[derive(Debug, Clone, Copy)]
pub struct SignatureHeaders<'a> {
    /// `webhook-id`.
    pub id: &'a str,
    /// `webhook-timestamp`.
    pub timestamp: &'a str,
    /// `webhook-signature`.
    pub signature: &'a str,
}

impl HeaderLookup for SignatureHeaders<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        match name {
            HEADER_ID => Some(self.id),
            HEADER_TIMESTAMP => Some(self.timestamp),
            HEADER_SIGNATURE => Some(self.signature),
            _ => None,
        }
    }
}

impl<K: AsRef<str>, V: AsRef<str>> HeaderLookup for [(K, V)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }
}

#[cfg(feature = "http")]
impl HeaderLookup for reqwest::header::HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Checks a received delivery: the headers are present, the timestamp is within `tolerance` of
/// `now` (either way), and at least one `v1` signature matches one of `secrets`. The comparison is
/// constant-time (`hmac`'s `verify_slice`).
///
/// Put this in your own webhook endpoint; pass the raw body bytes exactly as received.
///
/// # Errors
/// [`VerifyError`] saying which check failed (never echoing header values or the body).
pub fn verify<H: HeaderLookup + ?Sized>(
    secrets: &[WebhookSecret],
    headers: &H,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let id = headers
        .header(HEADER_ID)
        .ok_or(VerifyError::MissingHeader(HEADER_ID))?;
    let ts_text = headers
        .header(HEADER_TIMESTAMP)
        .ok_or(VerifyError::MissingHeader(HEADER_TIMESTAMP))?;
    let signatures = headers
        .header(HEADER_SIGNATURE)
        .ok_or(VerifyError::MissingHeader(HEADER_SIGNATURE))?;
    let timestamp: i64 = ts_text
        .trim()
        .parse()
        .map_err(|_| VerifyError::InvalidTimestamp)?;
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    let skew = now.timestamp().saturating_sub(timestamp);
    if skew > tolerance {
        return Err(VerifyError::TimestampTooOld);
    }
    if skew < -tolerance {
        return Err(VerifyError::TimestampInFuture);
    }
    if secrets.is_empty() {
        return Err(VerifyError::NoSecret);
    }
    let candidates: Vec<Vec<u8>> = signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .collect();
    if candidates.is_empty() {
        return Err(VerifyError::NoSupportedSignature);
    }
    let matched = secrets.iter().any(|secret| {
        let mac = mac(secret, id, timestamp, body);
        candidates
            .iter()
            .any(|sig| mac.clone().verify_slice(sig).is_ok())
    });
    if matched {
        Ok(())
    } else {
        Err(VerifyError::SignatureMismatch)
    }
}

/// A received delivery failed verification.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A required header is absent (or not valid text).
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not an integer.
    #[error("webhook-timestamp is not a Unix time in seconds")]
    InvalidTimestamp,
    /// The timestamp is older than the tolerance: a replay, or a very late delivery.
    #[error("webhook-timestamp is too old")]
    TimestampTooOld,
    /// The timestamp is further in the future than the tolerance.
    #[error("webhook-timestamp is in the future")]
    TimestampInFuture,
    /// The receiver has no secret to verify with.
    #[error("no verification secret configured")]
    NoSecret,
    /// `webhook-signature` holds no well-formed `v1` signature.
    #[error("webhook-signature holds no v1 signature")]
    NoSupportedSignature,
    /// No signature matches any secret: wrong secret, or the id, timestamp or body was altered.
    #[error("no signature matches")]
    SignatureMismatch,
}

impl VerifyError {
    /// Retrying the same delivery cannot succeed (the sender must re-sign).
    pub const fn is_retryable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1_614_265_330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secret() -> WebhookSecret {
        WebhookSecret::new(SPEC_SECRET).expect("spec secret parses")
    }

    fn spec_now() -> DateTime<Utc> {
        Utc.timestamp_opt(SPEC_TS + 10, 0).single().expect("valid")
    }

    /// The example from the Standard Webhooks specification (spec/standard-webhooks.md).
    #[test]
    fn spec_test_vector() {
        assert_eq!(sign(&secret(), SPEC_ID, SPEC_TS, SPEC_BODY), SPEC_SIG);
        let headers = SignatureHeaders {
            id: SPEC_ID,
            timestamp: "1614265330",
            signature: SPEC_SIG,
        };
        assert_eq!(
            verify(
                &[secret()],
                &headers,
                SPEC_BODY,
                spec_now(),
                DEFAULT_TOLERANCE
            ),
            Ok(())
        );
    }

    #[test]
    fn several_secrets_give_several_signatures_and_either_verifies() {
        let other = WebhookSecret::from_bytes(vec![7; 32]).expect("32 bytes");
        let header = sign_all(&[other.clone(), secret()], SPEC_ID, SPEC_TS, SPEC_BODY);
        assert_eq!(header.split(' ').count(), 2);
        assert!(header.ends_with(SPEC_SIG));
        let pairs = [
            ("Webhook-Id", SPEC_ID),
            ("webhook-timestamp", "1614265330"),
            ("webhook-signature", header.as_str()),
        ];
        for s in [secret(), other] {
            assert_eq!(
                verify(&[s], &pairs[..], SPEC_BODY, spec_now(), DEFAULT_TOLERANCE),
                Ok(())
            );
        }
    }

    #[test]
    fn each_check_fails_with_its_own_error() {
        let ok = SignatureHeaders {
            id: SPEC_ID,
            timestamp: "1614265330",
            signature: SPEC_SIG,
        };
        let check = |h: &SignatureHeaders<'_>, body: &[u8], now| {
            verify(&[secret()], h, body, now, DEFAULT_TOLERANCE)
        };
        assert_eq!(
            check(&ok, br#"{"test": 2432232315}"#, spec_now()),
            Err(VerifyError::SignatureMismatch)
        );
        let late = spec_now() + chrono::TimeDelta::seconds(301);
        assert_eq!(
            check(&ok, SPEC_BODY, late),
            Err(VerifyError::TimestampTooOld)
        );
        let early = spec_now() - chrono::TimeDelta::seconds(400);
        assert_eq!(
            check(&ok, SPEC_BODY, early),
            Err(VerifyError::TimestampInFuture)
        );
        let bad_ts = SignatureHeaders {
            timestamp: "yesterday",
            ..ok
        };
        assert_eq!(
            check(&bad_ts, SPEC_BODY, spec_now()),
            Err(VerifyError::InvalidTimestamp)
        );
        let v1a = SignatureHeaders {
            signature: "v1a,abc",
            ..ok
        };
        assert_eq!(
            check(&v1a, SPEC_BODY, spec_now()),
            Err(VerifyError::NoSupportedSignature)
        );
        let other_id = SignatureHeaders {
            id: "msg_other",
            ..ok
        };
        assert_eq!(
            check(&other_id, SPEC_BODY, spec_now()),
            Err(VerifyError::SignatureMismatch)
        );
        let none: [(&str, &str); 0] = [];
        assert_eq!(
            verify(
                &[secret()],
                &none[..],
                SPEC_BODY,
                spec_now(),
                DEFAULT_TOLERANCE
            ),
            Err(VerifyError::MissingHeader(HEADER_ID))
        );
        assert_eq!(
            verify(&[], &ok, SPEC_BODY, spec_now(), DEFAULT_TOLERANCE),
            Err(VerifyError::NoSecret)
        );
    }
}
