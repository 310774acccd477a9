//! Signatures end to end: our notifier against the testkit receiver running `verify`, rejections,
//! the specification's test vector, and interoperability with the `standardwebhooks` crate.

use std::time::Duration;

use chrono::Utc;
use oauth_webhooks::{
    DEFAULT_TOLERANCE, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, Notifier, SignatureHeaders,
    VerifyError, WebhookNotifier, sign, verify,
};

use crate::support::{OTHER_SECRET, SPEC_SECRET, config, event, receiver, secret};

#[tokio::test]
async fn signed_delivery_is_verified_by_the_receiver() {
    let rx = receiver(vec![secret(SPEC_SECRET)]).await;
    let notifier =
        WebhookNotifier::new(&config(rx.url(), vec![secret(SPEC_SECRET)])).expect("valid config");
    let ev = event(1);
    notifier.notify(ev.clone()).await;
    assert!(rx.wait_for_accepted(1, Duration::from_secs(10)).await);

    let got = rx.accepted();
    assert_eq!(got.len(), 1);
    let req = &got[0];
    assert_eq!(req.webhook_id(), Some(ev.id.as_str()));
    assert!(req.header(HEADER_TIMESTAMP).is_some());
    let sig = req.header(HEADER_SIGNATURE).expect("signed");
    assert!(sig.starts_with("v1,"), "{sig}");
    assert_eq!(req.header("content-type"), Some("application/json"));
    // The body is the event in its JSON shape.
    let body: oauth_webhooks::WebhookEvent =
        serde_json::from_slice(&req.body).expect("body is a WebhookEvent");
    assert_eq!(body, ev);
    assert!(rx.rejections().is_empty());
}

#[tokio::test]
async fn receiver_rejects_tampered_body_wrong_secret_and_stale_timestamp() {
    let rx = receiver(vec![secret(SPEC_SECRET)]).await;
    let client = reqwest::Client::new();
    let body = br#"{"type":"failure","message":"x"}"#;
    let post = |id: &'static str, ts: i64, sig: String, body: &'static [u8]| {
        client
            .post(rx.url())
            .header(HEADER_ID, id)
            .header(HEADER_TIMESTAMP, ts.to_string())
            .header(HEADER_SIGNATURE, sig)
            .body(body)
            .send()
    };
    let now = Utc::now().timestamp();
    let status = |r: reqwest::Result<reqwest::Response>| r.expect("request sent").status().as_u16();

    // Genuine.
    let good = sign(&secret(SPEC_SECRET), "msg_ok", now, body);
    assert_eq!(status(post("msg_ok", now, good.clone(), body).await), 200);
    // Tampered body under a genuine signature.
    let tampered: &'static [u8] = br#"{"type":"failure","message":"y"}"#;
    let sig = sign(&secret(SPEC_SECRET), "msg_tampered", now, body);
    assert_eq!(status(post("msg_tampered", now, sig, tampered).await), 401);
    // Signed with another secret.
    let sig = sign(&secret(OTHER_SECRET), "msg_wrong_secret", now, body);
    assert_eq!(status(post("msg_wrong_secret", now, sig, body).await), 401);
    // Correctly signed, but ten minutes old (a replay).
    let old = now - 600;
    let sig = sign(&secret(SPEC_SECRET), "msg_stale", old, body);
    assert_eq!(status(post("msg_stale", old, sig, body).await), 401);
    // A genuine signature replayed under another id.
    assert_eq!(status(post("msg_other_id", now, good, body).await), 401);

    let reasons: Vec<(String, String)> = rx
        .rejections()
        .iter()
        .map(|r| {
            (
                r.webhook_id().unwrap_or_default().to_owned(),
                r.verification.clone().expect_err("rejected"),
            )
        })
        .collect();
    let mismatch = VerifyError::SignatureMismatch.to_string();
    let stale = VerifyError::TimestampTooOld.to_string();
    assert_eq!(
        reasons,
        [
            ("msg_tampered".to_owned(), mismatch.clone()),
            ("msg_wrong_secret".to_owned(), mismatch.clone()),
            ("msg_stale".to_owned(), stale),
            ("msg_other_id".to_owned(), mismatch),
        ]
    );
    assert_eq!(rx.accepted().len(), 1);
}

#[tokio::test]
async fn two_secrets_during_rotation_verify_against_either() {
    // The sender signs with the old and the new secret; a receiver that knows only the new one
    // accepts, as does one that knows only the old one.
    let both = vec![secret(SPEC_SECRET), secret(OTHER_SECRET)];
    for known in [SPEC_SECRET, OTHER_SECRET] {
        let rx = receiver(vec![secret(known)]).await;
        let notifier = WebhookNotifier::new(&config(rx.url(), both.clone())).expect("valid config");
        notifier.notify(event(1)).await;
        assert!(rx.wait_for_accepted(1, Duration::from_secs(10)).await);
        let sig = rx.accepted()[0]
            .header(HEADER_SIGNATURE)
            .expect("signed")
            .to_owned();
        assert_eq!(sig.split(' ').count(), 2, "{sig}");
    }
}

/// The example in the Standard Webhooks specification (spec/standard-webhooks.md), through the
/// public API.
#[test]
fn standard_webhooks_spec_test_vector() {
    let body = br#"{"test": 2432232314}"#;
    let sig = sign(
        &secret(SPEC_SECRET),
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1_614_265_330,
        body,
    );
    assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

/// The `standardwebhooks` crate's own test vector, and verification both ways.
#[test]
fn interoperates_with_the_standardwebhooks_crate() {
    let their_secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let body = br#"{"email":"test@example.com","username":"test_user"}"#;
    let id = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    assert_eq!(
        sign(&secret(their_secret), id, 1_649_367_553, body),
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
    );

    let reference = standardwebhooks::Webhook::new(SPEC_SECRET).expect("reference accepts it");
    let now = Utc::now();
    let ts = now.timestamp();

    // Ours signs, theirs verifies.
    let ours = sign(&secret(SPEC_SECRET), id, ts, body);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(HEADER_ID, id.parse().expect("header value"));
    headers.insert(
        HEADER_TIMESTAMP,
        ts.to_string().parse().expect("header value"),
    );
    headers.insert(HEADER_SIGNATURE, ours.parse().expect("header value"));
    reference
        .verify(body, &headers)
        .expect("reference verifies our signature");
    // Our verify reads the same HeaderMap.
    verify(
        &[secret(SPEC_SECRET)],
        &headers,
        body,
        now,
        DEFAULT_TOLERANCE,
    )
    .expect("we verify our signature");

    // Theirs signs, ours verifies.
    let theirs = reference.sign(id, ts, body).expect("reference signs");
    let ts_text = ts.to_string();
    let h = SignatureHeaders {
        id,
        timestamp: &ts_text,
        signature: &theirs,
    };
    assert_eq!(
        verify(&[secret(SPEC_SECRET)], &h, body, now, DEFAULT_TOLERANCE),
        Ok(())
    );
}
