//! Every format on fixtures: read, write back (unknown fields kept, only known fields changed),
//! odd values, missing optional fields, malformed content.

use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};
use oauth_accounts::{AccountError, Format, providers};
use oauth_core::{Credential, CredentialId, ExposeSecret, TokenSet};
use serde_json::{Value, json};

use crate::support::{SECRET_MARKER, assert_no_secret, codex_auth_json, fixture, t0};

fn id(s: &str) -> CredentialId {
    CredentialId::new(s).expect("id")
}

fn read(format: Format, name: &str, bytes: &[u8]) -> (String, Credential) {
    let account = format
        .read(Path::new(name), bytes, id("acct"), t0())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    (account.provider, account.credential)
}

fn expose(s: Option<&oauth_core::SecretString>) -> Option<&str> {
    s.map(ExposeSecret::expose_secret)
}

fn ms(t: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(t)
}

/// A refresh as the pool would apply it: new tokens, a new expiry.
fn refreshed(c: &Credential, tag: &str) -> Credential {
    let mut c = c.clone();
    let mut tokens = TokenSet::new(format!("at-{tag}-new-{SECRET_MARKER}"))
        .with_refresh_token(format!("rt-{tag}-new-{SECRET_MARKER}"));
    tokens.expires_at = Some(t0() + TimeDelta::hours(2));
    c.apply_tokens(tokens, t0() + TimeDelta::hours(1));
    c
}

/// The JSON of `bytes` with the given pointers removed (to compare "everything else").
fn without(bytes: &[u8], pointers: &[&str]) -> Value {
    let mut v: Value = serde_json::from_slice(bytes).expect("json");
    for p in pointers {
        let (parent, key) = p.rsplit_once('/').expect("pointer");
        if let Some(Value::Object(m)) = v.pointer_mut(parent) {
            m.remove(key);
        }
    }
    v
}

/// Writing a credential back unchanged changes nothing; writing refreshed tokens changes exactly
/// `changed` and keeps every other field; reading the result gives the refreshed credential.
fn round_trip(format: Format, name: &str, original: &[u8], changed: &[&str]) -> Value {
    let (provider, cred) = read(format, name, original);
    let path = Path::new(name);

    let same = format
        .write(path, Some(original), &provider, &cred)
        .expect("write unchanged");
    assert_eq!(
        serde_json::from_slice::<Value>(&same).expect("json"),
        serde_json::from_slice::<Value>(original).expect("json"),
        "{name}: an unchanged credential rewrites nothing"
    );
    assert_eq!(
        same.ends_with(b"\n"),
        original.ends_with(b"\n"),
        "{name}: trailing newline kept"
    );
    let pretty = |b: &[u8]| b.strip_suffix(b"\n").unwrap_or(b).contains(&b'\n');
    assert_eq!(
        pretty(&same),
        pretty(original),
        "{name}: indentation style kept"
    );

    let new = refreshed(&cred, format.as_str());
    let out = format
        .write(path, Some(original), &provider, &new)
        .expect("write refreshed");
    assert_eq!(
        without(&out, changed),
        without(original, changed),
        "{name}: only the token fields changed"
    );
    let (provider2, back) = read(format, name, &out);
    assert_eq!(provider2, provider);
    assert!(back.same_tokens(&new), "{name}: tokens read back");
    if format != Format::Codex {
        assert_eq!(back.expires_at, new.expires_at, "{name}: expiry read back");
    }
    serde_json::from_slice(&out).expect("json")
}

#[test]
fn gemini_cli() {
    let bytes = fixture("gemini_oauth_creds.json");
    let (provider, c) = read(Format::GeminiCli, "oauth_creds.json", &bytes);
    assert_eq!(provider, providers::GEMINI);
    assert_eq!(c.access_token.expose_secret(), "ya29.at-gemini-SECRETVALUE");
    assert_eq!(
        expose(c.refresh_token.as_ref()),
        Some("1//rt-gemini-SECRETVALUE")
    );
    assert_eq!(c.expires_at, ms(1_769_159_945_362), "fractional ms read");
    assert_eq!(c.scopes.len(), 3);
    assert_eq!(
        c.metadata.email.as_deref(),
        Some("gemini@example.com"),
        "from the id token"
    );
    assert!(c.metadata.id_token.is_some());
    assert_eq!(c.created_at, t0());
    let out = round_trip(
        Format::GeminiCli,
        "oauth_creds.json",
        &bytes,
        &["/access_token", "/refresh_token", "/expiry_date"],
    );
    assert_eq!(
        out["future_field"],
        json!({"nested": [1, 2, 3], "flag": true})
    );
    assert!(out["expiry_date"].is_i64(), "written as integer ms");
}

#[test]
fn claude_code() {
    let bytes = fixture("claude_credentials.json");
    let (provider, c) = read(Format::ClaudeCode, ".credentials.json", &bytes);
    assert_eq!(provider, providers::ANTHROPIC);
    assert_eq!(
        c.access_token.expose_secret(),
        "sk-ant-oat01-at-claude-SECRETVALUE"
    );
    assert_eq!(c.expires_at, ms(1_767_225_600_000));
    assert_eq!(
        c.scopes,
        [
            "user:inference",
            "user:profile",
            "user:sessions:claude_code"
        ]
    );
    assert_eq!(c.metadata.plan.as_deref(), Some("max"));
    assert_eq!(
        c.metadata.extra.get("rate_limit_tier").map(String::as_str),
        Some("default_claude_max_5x")
    );
    let out = round_trip(
        Format::ClaudeCode,
        ".credentials.json",
        &bytes,
        &[
            "/claudeAiOauth/accessToken",
            "/claudeAiOauth/refreshToken",
            "/claudeAiOauth/expiresAt",
        ],
    );
    assert_eq!(out["claudeAiOauth"]["isMax"], json!(true));
    assert_eq!(
        out["mcpOAuth"]["server-1"]["accessToken"],
        "mcp-SECRETVALUE"
    );
}

#[test]
fn codex() {
    let bytes = codex_auth_json();
    let (provider, c) = read(Format::Codex, "auth.json", &bytes);
    assert_eq!(provider, providers::OPENAI);
    assert_eq!(
        expose(c.refresh_token.as_ref()),
        Some("rt-codex-SECRETVALUE")
    );
    assert_eq!(
        c.expires_at.map(|t| t.timestamp()),
        Some(1_767_225_600),
        "from the access token's exp"
    );
    assert_eq!(
        c.last_refresh.map(|t| t.timestamp_micros()),
        Some(1_767_182_400_123_456)
    );
    let m = &c.metadata;
    assert_eq!(
        m.account_id.as_deref(),
        Some("acct-in-file"),
        "the file's account id wins"
    );
    assert_eq!(m.email.as_deref(), Some("coder@example.com"));
    assert_eq!(m.plan.as_deref(), Some("pro"));
    assert!(m.id_token.is_some());
    let out = round_trip(
        Format::Codex,
        "auth.json",
        &bytes,
        &[
            "/tokens/access_token",
            "/tokens/refresh_token",
            "/last_refresh",
        ],
    );
    assert_eq!(out["OPENAI_API_KEY"], Value::Null);
    assert_eq!(out["agent_identity"], json!({"kept": "as is"}));
    assert_eq!(out["last_refresh"], "2026-01-01T01:00:00Z");

    // Without an account id in the file, the id token's claim fills it.
    let mut v: Value = serde_json::from_slice(&bytes).expect("json");
    v["tokens"]
        .as_object_mut()
        .expect("tokens")
        .remove("account_id");
    let (_, c) = read(Format::Codex, "auth.json", v.to_string().as_bytes());
    assert_eq!(c.metadata.account_id.as_deref(), Some("acct-from-claims"));
}

#[test]
fn qwen_code() {
    let bytes = fixture("qwen_oauth_creds.json");
    let (provider, c) = read(Format::QwenCode, "oauth_creds.json", &bytes);
    assert_eq!(provider, providers::QWEN);
    assert_eq!(c.metadata.resource_url.as_deref(), Some("portal.qwen.ai"));
    assert_eq!(c.expires_at, ms(1_767_225_600_000));
    let out = round_trip(
        Format::QwenCode,
        "oauth_creds.json",
        &bytes,
        &["/access_token", "/refresh_token", "/expiry_date"],
    );
    assert_eq!(out["extra_qwen"], "kept");

    // A rotated resource URL from the token response is written back.
    let (_, mut c) = read(Format::QwenCode, "oauth_creds.json", &bytes);
    c.apply_tokens(
        TokenSet::new("at2").with_extra("resource_url", "other.qwen.ai"),
        t0(),
    );
    let out = Format::QwenCode
        .write(Path::new("q.json"), Some(&bytes), providers::QWEN, &c)
        .expect("write");
    let v: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(v["resource_url"], "other.qwen.ai");
}

#[test]
fn cliproxy_flat_and_gemini_shapes() {
    let bytes = fixture("cliproxy_claude.json");
    let (provider, c) = read(Format::CliProxy, "claude-someone@example.com.json", &bytes);
    assert_eq!(provider, providers::ANTHROPIC);
    assert_eq!(c.metadata.email.as_deref(), Some("someone@example.com"));
    assert_eq!(
        c.expires_at.map(|t| t.to_rfc3339()),
        Some("2026-01-01T00:00:00+00:00".into())
    );
    assert_eq!(
        c.last_refresh,
        Some(t0() - TimeDelta::hours(2)),
        "offset honoured"
    );
    assert!(c.metadata.id_token.is_none(), "an empty id token is none");
    let out = round_trip(
        Format::CliProxy,
        "claude.json",
        &bytes,
        &[
            "/access_token",
            "/refresh_token",
            "/expired",
            "/last_refresh",
        ],
    );
    assert_eq!(out["type"], "claude");
    assert_eq!(out["disabled"], json!(false));

    let bytes = fixture("cliproxy_gemini.json");
    let (provider, c) = read(Format::CliProxy, "g.json", &bytes);
    assert_eq!(provider, providers::GEMINI);
    assert_eq!(
        c.client_id,
        "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com"
    );
    assert!(c.client_secret.is_some());
    assert_eq!(
        c.metadata.extra.get("project_id").map(String::as_str),
        Some("my-project-123")
    );
    assert_eq!(
        c.expires_at.map(|t| t.timestamp_millis()),
        Some(t0().timestamp_millis() + 500)
    );
    let out = round_trip(
        Format::CliProxy,
        "g.json",
        &bytes,
        &[
            "/token/access_token",
            "/token/refresh_token",
            "/token/expiry",
        ],
    );
    assert_eq!(out["token"]["universe_domain"], "googleapis.com");
    assert_eq!(out["token"]["client_secret"], "cs-proxy-gemini-SECRETVALUE");
}

#[test]
fn new_files_in_each_format() {
    let mut c = Credential::new("n", format!("at-{SECRET_MARKER}"), t0())
        .expect("cred")
        .with_refresh_token(format!("rt-{SECRET_MARKER}"))
        .with_expires_at(t0());
    c.metadata.resource_url = Some("portal.qwen.ai".into());
    for (format, provider) in [
        (Format::GeminiCli, providers::GEMINI),
        (Format::ClaudeCode, providers::ANTHROPIC),
        (Format::Codex, providers::OPENAI),
        (Format::QwenCode, providers::QWEN),
        (Format::CliProxy, providers::OPENAI),
        (Format::CliProxy, providers::GEMINI),
    ] {
        let out = format
            .write(Path::new("new.json"), None, provider, &c)
            .expect("write");
        assert!(out.ends_with(b"\n"));
        // A bare Gemini file says what it is by where it lives.
        let at = if format == Format::GeminiCli {
            "/h/.gemini/oauth_creds.json"
        } else {
            "new.json"
        };
        assert_eq!(
            Format::detect(Path::new(at), &out).ok(),
            Some(format),
            "{format}/{provider} is recognised"
        );
        let back = format
            .read(Path::new("new.json"), &out, id("n"), t0())
            .expect("read back");
        assert_eq!(back.provider, provider);
        assert!(back.credential.same_tokens(&c));
        if format != Format::Codex {
            assert_eq!(back.credential.expires_at, Some(t0()));
        }
    }
}

#[test]
fn missing_optional_fields_and_odd_values() {
    // Only an access token.
    let (_, c) = read(Format::GeminiCli, "g.json", br#"{"access_token":"a"}"#);
    assert!(c.refresh_token.is_none() && c.expires_at.is_none() && c.scopes.is_empty());
    assert!(c.metadata.is_empty());
    let out = Format::GeminiCli
        .write(
            Path::new("g.json"),
            Some(br#"{"access_token":"a"}"#),
            providers::GEMINI,
            &c,
        )
        .expect("write");
    assert_eq!(
        out, br#"{"access_token":"a"}"#,
        "nothing invented, compact kept"
    );

    // Odd optional values are read as unknown and left as they are.
    let odd = br#"{"access_token":"a","refresh_token":null,"expiry_date":"soon","scope":42,
        "id_token":"not-a-jwt","resource_url":7}"#;
    let (_, c) = read(Format::QwenCode, "q.json", odd);
    assert!(c.expires_at.is_none() && c.refresh_token.is_none());
    assert!(c.metadata.resource_url.is_none() && c.metadata.email.is_none());
    let out = Format::QwenCode
        .write(Path::new("q.json"), Some(odd), providers::QWEN, &c)
        .expect("write");
    let v: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(v["expiry_date"], "soon");
    assert_eq!(v["resource_url"], 7);

    for expiry in ["-1", "1e300", "true", "[1]", "\"\""] {
        let text = format!(r#"{{"claudeAiOauth":{{"accessToken":"a","expiresAt":{expiry}}}}}"#);
        let (_, c) = read(Format::ClaudeCode, "c.json", text.as_bytes());
        assert!(c.expires_at.is_none(), "{expiry}");
    }
    // Codex with an opaque (non-JWT) access token: no expiry, no panic.
    let (_, c) = read(
        Format::Codex,
        "auth.json",
        br#"{"tokens":{"access_token":"opaque","refresh_token":"r","id_token":"x.%%%.y"}}"#,
    );
    assert!(c.expires_at.is_none() && c.metadata.email.is_none());
}

#[test]
fn malformed_files_are_typed_errors_naming_the_file() {
    let cases: &[(Format, &[u8], &str)] = &[
        (Format::GeminiCli, b"", "empty"),
        (Format::GeminiCli, b"   \n", "empty"),
        (
            Format::GeminiCli,
            br#"{"access_token": "ya29-SECRETVALUE"#,
            "truncated",
        ),
        (Format::GeminiCli, b"not json SECRETVALUE", "invalid JSON"),
        (
            Format::GeminiCli,
            br#"["ya29-SECRETVALUE"]"#,
            "not a JSON object",
        ),
        (
            Format::GeminiCli,
            br#"{"refresh_token":"rt-SECRETVALUE"}"#,
            "no access token",
        ),
        (
            Format::GeminiCli,
            br#"{"access_token":""}"#,
            "no access token",
        ),
        (
            Format::QwenCode,
            br#"{"access_token":12345}"#,
            "not a string",
        ),
        (
            Format::GeminiCli,
            br#"{"access_token":"a","refresh_token":["SECRETVALUE"]}"#,
            "not a string",
        ),
        (
            Format::ClaudeCode,
            br#"{"accessToken":"SECRETVALUE"}"#,
            "missing",
        ),
        (
            Format::ClaudeCode,
            br#"{"claudeAiOauth":"SECRETVALUE"}"#,
            "not an object",
        ),
        (
            Format::Codex,
            br#"{"OPENAI_API_KEY":"sk-SECRETVALUE"}"#,
            "API-key-only",
        ),
        (
            Format::CliProxy,
            br#"{"access_token":"SECRETVALUE"}"#,
            "type",
        ),
        (
            Format::CliProxy,
            br#"{"type":"gemini","token":{"refresh_token":"SECRETVALUE"}}"#,
            "no access token",
        ),
    ];
    for (format, bytes, expect) in cases {
        let err = format
            .read(Path::new("/accounts/bad.json"), bytes, id("x"), t0())
            .expect_err("malformed");
        let text = err.to_string();
        assert!(matches!(err, AccountError::Malformed { .. }), "{text}");
        assert!(text.contains("/accounts/bad.json"), "{text}");
        assert!(text.contains(expect), "{format}: {text}");
        assert_no_secret(&text);
        assert_no_secret(&format!("{err:?}"));
        assert_eq!(err.path(), Some(Path::new("/accounts/bad.json")));
    }
    let err = Format::detect(Path::new("/a/x.json"), br#"{"hello":"SECRETVALUE"}"#)
        .expect_err("unrecognised");
    assert!(matches!(err, AccountError::Unrecognized { .. }));
    assert_no_secret(&err.to_string());
    // Writing into a malformed original refuses too.
    let err = Format::ClaudeCode
        .write(
            Path::new("/a/c.json"),
            Some(br#"{"claudeAiOauth": 5}"#),
            providers::ANTHROPIC,
            &Credential::new("c", "a", t0()).expect("cred"),
        )
        .expect_err("not an object");
    assert!(err.to_string().contains("/a/c.json"));
}

#[test]
fn detection() {
    let cases: &[(&str, Vec<u8>, Option<Format>)] = &[
        (
            "/h/.gemini/oauth_creds.json",
            fixture("gemini_oauth_creds.json"),
            Some(Format::GeminiCli),
        ),
        (
            "/h/.claude/.credentials.json",
            fixture("claude_credentials.json"),
            Some(Format::ClaudeCode),
        ),
        (
            "/h/.codex/auth.json",
            codex_auth_json(),
            Some(Format::Codex),
        ),
        (
            "/h/.qwen/oauth_creds.json",
            fixture("qwen_oauth_creds.json"),
            Some(Format::QwenCode),
        ),
        (
            "/d/a.json",
            fixture("cliproxy_gemini.json"),
            Some(Format::CliProxy),
        ),
        (
            "/d/a.json",
            fixture("cliproxy_claude.json"),
            Some(Format::CliProxy),
        ),
        // Indistinguishable by content: the path decides.
        (
            "/h/.qwen/oauth_creds.json",
            br#"{"access_token":"a"}"#.to_vec(),
            Some(Format::QwenCode),
        ),
        (
            "/d/gemini-work.json",
            br#"{"access_token":"a"}"#.to_vec(),
            Some(Format::GeminiCli),
        ),
        ("/d/work.json", br#"{"access_token":"a"}"#.to_vec(), None),
    ];
    for (path, bytes, want) in cases {
        assert_eq!(Format::detect(Path::new(path), bytes).ok(), *want, "{path}");
    }
}

#[test]
fn default_paths() {
    let home = Path::new("/home/u");
    assert_eq!(
        Format::GeminiCli.path_in(home).as_deref(),
        Some(Path::new("/home/u/.gemini/oauth_creds.json"))
    );
    assert_eq!(
        Format::ClaudeCode.path_in(home).as_deref(),
        Some(Path::new("/home/u/.claude/.credentials.json"))
    );
    assert_eq!(
        Format::Codex.path_in(home).as_deref(),
        Some(Path::new("/home/u/.codex/auth.json"))
    );
    assert_eq!(
        Format::QwenCode.path_in(home).as_deref(),
        Some(Path::new("/home/u/.qwen/oauth_creds.json"))
    );
    assert_eq!(Format::CliProxy.path_in(home), None);
}

#[test]
fn debug_output_holds_no_secret() {
    for (format, bytes) in [
        (Format::GeminiCli, fixture("gemini_oauth_creds.json")),
        (Format::ClaudeCode, fixture("claude_credentials.json")),
        (Format::Codex, codex_auth_json()),
        (Format::QwenCode, fixture("qwen_oauth_creds.json")),
        (Format::CliProxy, fixture("cliproxy_gemini.json")),
        (Format::CliProxy, fixture("cliproxy_claude.json")),
    ] {
        let account = format
            .read(Path::new("f.json"), &bytes, id("f"), t0())
            .expect("read");
        assert_no_secret(&format!("{account:?}"));
    }
}
