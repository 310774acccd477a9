//! The credential file formats of the official CLIs and of CLIProxyAPI account directories:
//! reading one into a [`Credential`], and writing a credential back into the file's own JSON
//! object, changing only the fields this crate knows and keeping every other one.

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use oauth_core::{Credential, CredentialId, CredentialMetadata, ExposeSecret};
use serde_json::{Map, Value};

use crate::error::{AccountError, describe_json};
use crate::jwt;
use crate::order::{Ordered, Shape};

/// The provider names this crate files accounts under (the `provider` argument of
/// [`CredentialStore`](oauth_store::CredentialStore) calls).
pub mod providers {
    /// Google Gemini (Gemini CLI, CLIProxyAPI `"type": "gemini"`).
    pub const GEMINI: &str = "gemini";
    /// Anthropic Claude (Claude Code, CLIProxyAPI `"type": "claude"`).
    pub const ANTHROPIC: &str = "anthropic";
    /// OpenAI (Codex, CLIProxyAPI `"type": "codex"`).
    pub const OPENAI: &str = "openai";
    /// Qwen (Qwen Code, CLIProxyAPI `"type": "qwen"`).
    pub const QWEN: &str = "qwen";
}

/// The format of one account file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// Gemini CLI, `~/.gemini/oauth_creds.json`: google-auth-library's `Credentials` object
    /// (`access_token`, `refresh_token`, `expiry_date` in ms since the epoch, `token_type`,
    /// `scope`, `id_token`). Written by `cacheCredentials` in google-gemini/gemini-cli
    /// `packages/core/src/code_assist/oauth2.ts`.
    GeminiCli,
    /// Claude Code, `~/.claude/.credentials.json`: `{"claudeAiOauth": {"accessToken",
    /// "refreshToken", "expiresAt" (ms), "scopes", "subscriptionType", "rateLimitTier"}}`.
    /// Claude Code's source is not public; the shape is the one its Linux installs write and that
    /// tools reading it document (e.g. anthropics/claude-code issues on `.credentials.json`).
    ClaudeCode,
    /// Codex, `~/.codex/auth.json`: `{"OPENAI_API_KEY", "tokens": {"id_token", "access_token",
    /// "refresh_token", "account_id"}, "last_refresh"}` (openai/codex
    /// `codex-rs/login/src/auth/storage.rs` `AuthDotJson`, `codex-rs/login/src/token_data.rs`
    /// `TokenData`). The access token is a JWT whose `exp` is the expiry; the id token's claims
    /// hold the e-mail, the plan and the account id.
    Codex,
    /// Qwen Code, `~/.qwen/oauth_creds.json`: `access_token`, `refresh_token`, `id_token`,
    /// `expiry_date` (ms), `token_type`, `resource_url` (QwenLM/qwen-code
    /// `packages/core/src/qwen/qwenOAuth2.ts`, `QwenCredentials`).
    QwenCode,
    /// One file per account with a `"type"` naming its provider, as CLIProxyAPI keeps them in its
    /// `auth-dir` (router-for-me/CLIProxyAPI `internal/auth/{claude,codex,qwen}/*token.go`): flat
    /// `access_token`, `refresh_token`, `id_token`, `account_id`, `email`, `resource_url`,
    /// `last_refresh` and `expired` (RFC 3339); for `"type": "gemini"` the tokens sit under
    /// `"token"` (golang.org/x/oauth2's `Token`: `access_token`, `refresh_token`, `expiry`
    /// RFC 3339, plus `client_id`, `client_secret`, `scopes`), with `email` and `project_id`
    /// beside it (`internal/auth/gemini/gemini_token.go`).
    CliProxy,
}

impl Format {
    /// Every format.
    pub const ALL: [Self; 5] = [
        Self::GeminiCli,
        Self::ClaudeCode,
        Self::Codex,
        Self::QwenCode,
        Self::CliProxy,
    ];

    /// A short stable name (`gemini-cli`, `claude-code`, `codex`, `qwen-code`, `cliproxy`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::GeminiCli => "gemini-cli",
            Self::ClaudeCode => "claude-code",
            Self::Codex => "codex",
            Self::QwenCode => "qwen-code",
            Self::CliProxy => "cliproxy",
        }
    }

    /// The provider a CLI's own file belongs to (`None` for [`Format::CliProxy`], whose files
    /// name it in their `"type"`).
    pub const fn provider(self) -> Option<&'static str> {
        match self {
            Self::GeminiCli => Some(providers::GEMINI),
            Self::ClaudeCode => Some(providers::ANTHROPIC),
            Self::Codex => Some(providers::OPENAI),
            Self::QwenCode => Some(providers::QWEN),
            Self::CliProxy => None,
        }
    }

    /// The file the CLI keeps its login in, under `home`: `.gemini/oauth_creds.json`,
    /// `.claude/.credentials.json`, `.codex/auth.json` (Codex honours `$CODEX_HOME` instead),
    /// `.qwen/oauth_creds.json`. `None` for [`Format::CliProxy`] (a directory of files).
    pub fn path_in(self, home: &Path) -> Option<PathBuf> {
        let rel = match self {
            Self::GeminiCli => ".gemini/oauth_creds.json",
            Self::ClaudeCode => ".claude/.credentials.json",
            Self::Codex => ".codex/auth.json",
            Self::QwenCode => ".qwen/oauth_creds.json",
            Self::CliProxy => return None,
        };
        Some(home.join(rel))
    }

    /// [`path_in`](Self::path_in) the user's home (`$HOME`), with `$CODEX_HOME/auth.json` for
    /// Codex when that is set.
    pub fn default_path(self) -> Option<PathBuf> {
        if self == Self::Codex
            && let Some(codex_home) = std::env::var_os("CODEX_HOME").filter(|h| !h.is_empty())
        {
            return Some(PathBuf::from(codex_home).join("auth.json"));
        }
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
        self.path_in(Path::new(&home))
    }

    /// The credential id a CLI's own file gets by default (`gemini-cli`, `claude-code`,
    /// `codex-cli`, `qwen-code`; `account` for CLIProxyAPI files).
    pub const fn default_id(self) -> &'static str {
        match self {
            Self::GeminiCli => "gemini-cli",
            Self::ClaudeCode => "claude-code",
            Self::Codex => "codex-cli",
            Self::QwenCode => "qwen-code",
            Self::CliProxy => "account",
        }
    }

    /// Recognises a file's format from its content, and from its path where the content alone
    /// cannot tell (Gemini CLI and Qwen Code files without `resource_url` or a Google scope look
    /// alike: a `.qwen` directory or `qwen` in the file name says Qwen, `.gemini`/`gemini` says
    /// Gemini).
    ///
    /// # Errors
    /// [`AccountError::Malformed`] when the file is not a JSON object, [`AccountError::Unrecognized`]
    /// when it is in no known format.
    pub fn detect(path: &Path, bytes: &[u8]) -> Result<Self, AccountError> {
        let value = parse_object(path, bytes)?;
        Self::detect_value(path, &value).ok_or_else(|| AccountError::Unrecognized {
            path: path.to_path_buf(),
        })
    }

    fn detect_value(path: &Path, top: &Map<String, Value>) -> Option<Self> {
        if top.get("claudeAiOauth").is_some_and(Value::is_object) {
            return Some(Self::ClaudeCode);
        }
        if top.get("type").is_some_and(Value::is_string) {
            return Some(Self::CliProxy);
        }
        if top.get("tokens").is_some_and(Value::is_object) || top.contains_key("OPENAI_API_KEY") {
            return Some(Self::Codex);
        }
        if !(top.contains_key("access_token") || top.contains_key("refresh_token")) {
            return None;
        }
        if top.contains_key("resource_url") {
            return Some(Self::QwenCode);
        }
        if top
            .get("scope")
            .and_then(Value::as_str)
            .is_some_and(|s| s.contains("googleapis.com"))
        {
            return Some(Self::GeminiCli);
        }
        let hint = path.to_string_lossy().to_ascii_lowercase();
        match (hint.contains("qwen"), hint.contains("gemini")) {
            (true, false) => Some(Self::QwenCode),
            (false, true) => Some(Self::GeminiCli),
            _ => None,
        }
    }

    /// Reads an account file's content into a credential with id `id`.
    ///
    /// Tokens must be strings (a missing or empty access token is an error: the account cannot
    /// be used); odd optional values (an expiry that is text, negative or absurd, an e-mail that
    /// is a number) are read as unknown rather than refused.
    ///
    /// # Errors
    /// [`AccountError::Malformed`] naming `path` (never quoting the content).
    pub fn read(
        self,
        path: &Path,
        bytes: &[u8],
        id: CredentialId,
        created_at: DateTime<Utc>,
    ) -> Result<Account, AccountError> {
        let top = parse_object(path, bytes)?;
        let f = Fields { path, top: &top };
        match self {
            Self::GeminiCli => read_gemini(&f, id, created_at),
            Self::ClaudeCode => read_claude(&f, id, created_at),
            Self::Codex => read_codex(&f, id, created_at),
            Self::QwenCode => read_qwen(&f, id, created_at),
            Self::CliProxy => read_cliproxy(&f, id, created_at),
        }
    }

    /// Writes `credential` in this format: into `original` (the file's current content) when
    /// given, changing only the fields this crate knows and keeping all others, or as a new file.
    /// `provider` names the `"type"` of a new CLIProxyAPI file.
    ///
    /// The output is indented like `original` (pretty when it spans lines, compact otherwise) and
    /// ends with a newline when `original` did; the file's key order is kept (new keys follow).
    ///
    /// # Errors
    /// [`AccountError::Malformed`] when `original` is not a JSON object of this format.
    pub fn write(
        self,
        path: &Path,
        original: Option<&[u8]>,
        provider: &str,
        credential: &Credential,
    ) -> Result<Vec<u8>, AccountError> {
        let (mut top, pretty, newline) = match original {
            Some(bytes) => {
                let top = parse_object(path, bytes)?;
                let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
                (top, body.contains(&b'\n'), bytes.ends_with(b"\n"))
            }
            None => (Map::new(), true, true),
        };
        let creating = original.is_none();
        match self {
            Self::GeminiCli => write_gemini(&mut top, credential, creating),
            Self::ClaudeCode => write_claude(path, &mut top, credential)?,
            Self::Codex => write_codex(path, &mut top, credential, creating)?,
            Self::QwenCode => write_qwen(&mut top, credential, creating),
            Self::CliProxy => write_cliproxy(path, &mut top, credential, provider)?,
        }
        let value = Value::Object(top);
        // The file's own key order, replayed (new keys follow, sorted).
        let shape: Option<Shape> = original.and_then(|b| serde_json::from_slice(b).ok());
        let ordered = Ordered(&value, shape.as_ref());
        let mut out = if pretty {
            serde_json::to_vec_pretty(&ordered)
        } else {
            serde_json::to_vec(&ordered)
        }
        .map_err(|e| AccountError::malformed(path, describe_json(&e)))?;
        if newline {
            out.push(b'\n');
        }
        Ok(out)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One account read from a file: its provider and its credential (tokens, expiry, scopes and
/// [`metadata`](Credential::metadata)).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Account {
    /// The provider it belongs to (see [`providers`]).
    pub provider: String,
    /// The credential.
    pub credential: Credential,
}

/// The provider a CLIProxyAPI `"type"` names.
pub fn provider_of_cliproxy_type(kind: &str) -> String {
    match kind {
        "gemini" | "gemini-cli" => providers::GEMINI.to_owned(),
        "claude" => providers::ANTHROPIC.to_owned(),
        "codex" => providers::OPENAI.to_owned(),
        other => other.to_owned(),
    }
}

/// The CLIProxyAPI `"type"` of a provider (the inverse of [`provider_of_cliproxy_type`]).
pub fn cliproxy_type_of_provider(provider: &str) -> &str {
    match provider {
        providers::ANTHROPIC => "claude",
        providers::OPENAI => "codex",
        other => other,
    }
}

// ---- reading ----

fn parse_object(path: &Path, bytes: &[u8]) -> Result<Map<String, Value>, AccountError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(AccountError::malformed(path, "the file is empty"));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(AccountError::malformed(path, "not a JSON object")),
        Err(e) => Err(AccountError::malformed(path, describe_json(&e))),
    }
}

/// Field access with errors that name the field, never its value.
struct Fields<'a> {
    path: &'a Path,
    top: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn nested(&self, key: &str) -> Result<Fields<'a>, AccountError> {
        match self.top.get(key) {
            Some(Value::Object(map)) => Ok(Fields {
                path: self.path,
                top: map,
            }),
            Some(_) => Err(AccountError::malformed(
                self.path,
                format!("field {key:?} is not an object"),
            )),
            None => Err(AccountError::malformed(
                self.path,
                format!("field {key:?} is missing"),
            )),
        }
    }

    /// A token field: absent, null or "" is `None`; a non-string is an error.
    fn token(&self, key: &str) -> Result<Option<String>, AccountError> {
        match self.top.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(AccountError::malformed(
                self.path,
                format!("field {key:?} is not a string"),
            )),
        }
    }

    /// An informational text field: anything but a non-empty string is `None`.
    fn text(&self, key: &str) -> Option<String> {
        self.top
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }

    fn millis(&self, key: &str) -> Option<DateTime<Utc>> {
        self.top.get(key).and_then(millis_time)
    }

    fn rfc3339(&self, key: &str) -> Option<DateTime<Utc>> {
        self.top.get(key).and_then(rfc3339_time)
    }

    fn access_token(&self, key: &str) -> Result<String, AccountError> {
        self.token(key)?.ok_or_else(|| {
            AccountError::malformed(self.path, format!("no access token (field {key:?})"))
        })
    }
}

/// Milliseconds since the epoch, as a JSON number (integer or fractional, as google-auth-library
/// sometimes writes) or a numeric string. Out-of-range or non-finite values are unknown.
fn millis_time(v: &Value) -> Option<DateTime<Utc>> {
    let ms: f64 = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    // chrono's range is about ±262,000 years; refuse anything past year 9999 or before 1970.
    if !ms.is_finite() || !(0.0..=253_402_300_799_000.0).contains(&ms) {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)] // range checked above
    DateTime::from_timestamp_millis(ms.trunc() as i64)
}

fn rfc3339_time(v: &Value) -> Option<DateTime<Utc>> {
    let s = v.as_str()?;
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn new_credential(
    f: &Fields<'_>,
    id: CredentialId,
    created_at: DateTime<Utc>,
    access: String,
    refresh: Option<String>,
) -> Result<Credential, AccountError> {
    let mut cred = Credential::new(id.as_str(), access, created_at)
        .map_err(|e| AccountError::malformed(f.path, e.to_string()))?;
    if let Some(rt) = refresh {
        cred = cred.with_refresh_token(rt);
    }
    Ok(cred)
}

fn scopes_from_space_list(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => scopes_from_space_list(s),
        _ => Vec::new(),
    }
}

fn fill_from_id_token(m: &mut CredentialMetadata, id_token: Option<&str>) {
    let Some(token) = id_token else { return };
    let claims = jwt::id_claims(token);
    if m.email.is_none() {
        m.email = claims.email;
    }
    if m.plan.is_none() {
        m.plan = claims.plan;
    }
    if m.account_id.is_none() {
        m.account_id = claims.account_id;
    }
}

fn account(provider: &str, credential: Credential) -> Account {
    Account {
        provider: provider.to_owned(),
        credential,
    }
}

fn read_gemini(
    f: &Fields<'_>,
    id: CredentialId,
    created_at: DateTime<Utc>,
) -> Result<Account, AccountError> {
    let access = f.access_token("access_token")?;
    let mut cred = new_credential(f, id, created_at, access, f.token("refresh_token")?)?;
    cred.expires_at = f.millis("expiry_date");
    if let Some(scope) = f.text("scope") {
        cred.scopes = scopes_from_space_list(&scope);
    }
    let id_token = f.token("id_token")?;
    fill_from_id_token(&mut cred.metadata, id_token.as_deref());
    cred.metadata.id_token = id_token.map(Into::into);
    Ok(account(providers::GEMINI, cred))
}

fn read_claude(
    f: &Fields<'_>,
    id: CredentialId,
    created_at: DateTime<Utc>,
) -> Result<Account, AccountError> {
    let o = f.nested("claudeAiOauth")?;
    let access = o.access_token("accessToken")?;
    let mut cred = new_credential(&o, id, created_at, access, o.token("refreshToken")?)?;
    cred.expires_at = o.millis("expiresAt");
    cred.scopes = string_list(o.top.get("scopes"));
    cred.metadata.plan = o.text("subscriptionType");
    if let Some(tier) = o.text("rateLimitTier") {
        cred.metadata
            .extra
            .insert("rate_limit_tier".to_owned(), tier);
    }
    Ok(account(providers::ANTHROPIC, cred))
}

fn read_codex(
    f: &Fields<'_>,
    id: CredentialId,
    created_at: DateTime<Utc>,
) -> Result<Account, AccountError> {
    let t = f.nested("tokens").map_err(|_| {
        AccountError::malformed(
            f.path,
            "no \"tokens\" object (an API-key-only auth.json has no OAuth account)",
        )
    })?;
    let access = t.access_token("access_token")?;
    let mut cred = new_credential(
        &t,
        id,
        created_at,
        access.clone(),
        t.token("refresh_token")?,
    )?;
    // Codex keeps no expiry in the file: its access token is a JWT whose `exp` says it.
    cred.expires_at = jwt::expiry(&access);
    cred.last_refresh = f.rfc3339("last_refresh");
    cred.metadata.account_id = t.text("account_id");
    let id_token = t.token("id_token")?;
    fill_from_id_token(&mut cred.metadata, id_token.as_deref());
    cred.metadata.id_token = id_token.map(Into::into);
    Ok(account(providers::OPENAI, cred))
}

fn read_qwen(
    f: &Fields<'_>,
    id: CredentialId,
    created_at: DateTime<Utc>,
) -> Result<Account, AccountError> {
    let access = f.access_token("access_token")?;
    let mut cred = new_credential(f, id, created_at, access, f.token("refresh_token")?)?;
    cred.expires_at = f.millis("expiry_date");
    cred.metadata.resource_url = f.text("resource_url");
    let id_token = f.token("id_token")?;
    fill_from_id_token(&mut cred.metadata, id_token.as_deref());
    cred.metadata.id_token = id_token.map(Into::into);
    Ok(account(providers::QWEN, cred))
}

fn read_cliproxy(
    f: &Fields<'_>,
    id: CredentialId,
    created_at: DateTime<Utc>,
) -> Result<Account, AccountError> {
    let kind = f
        .text("type")
        .ok_or_else(|| AccountError::malformed(f.path, "field \"type\" is missing or empty"))?;
    let provider = provider_of_cliproxy_type(&kind);
    let mut cred = if provider == providers::GEMINI {
        let t = f.nested("token")?;
        let access = t.access_token("access_token")?;
        let mut cred = new_credential(&t, id, created_at, access, t.token("refresh_token")?)?;
        cred.expires_at = t.rfc3339("expiry").or_else(|| t.millis("expiry_date"));
        cred.scopes = string_list(t.top.get("scopes"));
        if let Some(client_id) = t.text("client_id") {
            cred = cred.with_client(client_id, t.token("client_secret")?);
        }
        if let Some(project) = f.text("project_id") {
            cred.metadata.extra.insert("project_id".to_owned(), project);
        }
        cred
    } else {
        let access = f.access_token("access_token")?;
        let mut cred = new_credential(f, id, created_at, access, f.token("refresh_token")?)?;
        cred.expires_at = f.rfc3339("expired").or_else(|| f.millis("expiry_date"));
        cred.last_refresh = f.rfc3339("last_refresh");
        cred.metadata.account_id = f.text("account_id");
        cred.metadata.resource_url = f.text("resource_url");
        let id_token = f.token("id_token")?;
        fill_from_id_token(&mut cred.metadata, id_token.as_deref());
        cred.metadata.id_token = id_token.map(Into::into);
        cred
    };
    if let Some(email) = f.text("email") {
        cred.metadata.email = Some(email);
    }
    Ok(account(&provider, cred))
}

// ---- writing ----

/// Sets a milliseconds-since-the-epoch field, unless it already says the same millisecond (so an
/// untouched fractional `expiry_date` is not rewritten).
fn put_millis(top: &mut Map<String, Value>, key: &str, t: Option<DateTime<Utc>>) {
    let Some(t) = t else { return };
    if top
        .get(key)
        .and_then(millis_time)
        .map(|old| old.timestamp_millis())
        != Some(t.timestamp_millis())
    {
        top.insert(key.to_owned(), Value::from(t.timestamp_millis()));
    }
}

/// Sets an RFC 3339 field, unless it already names the same instant.
fn put_rfc3339(top: &mut Map<String, Value>, key: &str, t: Option<DateTime<Utc>>) {
    let Some(t) = t else { return };
    if top.get(key).and_then(rfc3339_time) != Some(t) {
        top.insert(
            key.to_owned(),
            Value::from(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        );
    }
}

fn secret(s: &oauth_core::SecretString) -> Value {
    Value::from(s.expose_secret())
}

/// Sets the token fields every flat format shares (under the given names).
fn put_tokens(top: &mut Map<String, Value>, c: &Credential, access: &str, refresh: &str) {
    top.insert(access.to_owned(), secret(&c.access_token));
    if let Some(rt) = &c.refresh_token {
        top.insert(refresh.to_owned(), secret(rt));
    }
}

fn put_opt(top: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        top.insert(key.to_owned(), v);
    }
}

fn nested_mut<'a>(
    path: &Path,
    top: &'a mut Map<String, Value>,
    key: &str,
) -> Result<&'a mut Map<String, Value>, AccountError> {
    let slot = top
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    slot.as_object_mut()
        .ok_or_else(|| AccountError::malformed(path, format!("field {key:?} is not an object")))
}

fn write_gemini(top: &mut Map<String, Value>, c: &Credential, creating: bool) {
    put_tokens(top, c, "access_token", "refresh_token");
    put_millis(top, "expiry_date", c.expires_at);
    if !c.scopes.is_empty() && string_list(top.get("scope")) != c.scopes {
        top.insert("scope".to_owned(), Value::from(c.scopes.join(" ")));
    }
    put_opt(top, "id_token", c.metadata.id_token.as_ref().map(secret));
    if creating {
        top.insert("token_type".to_owned(), Value::from("Bearer"));
    }
}

fn write_claude(
    path: &Path,
    top: &mut Map<String, Value>,
    c: &Credential,
) -> Result<(), AccountError> {
    let o = nested_mut(path, top, "claudeAiOauth")?;
    put_tokens(o, c, "accessToken", "refreshToken");
    put_millis(o, "expiresAt", c.expires_at);
    if !c.scopes.is_empty() && string_list(o.get("scopes")) != c.scopes {
        o.insert("scopes".to_owned(), Value::from(c.scopes.clone()));
    }
    put_opt(
        o,
        "subscriptionType",
        c.metadata.plan.clone().map(Value::from),
    );
    Ok(())
}

fn write_codex(
    path: &Path,
    top: &mut Map<String, Value>,
    c: &Credential,
    creating: bool,
) -> Result<(), AccountError> {
    if creating {
        top.insert("OPENAI_API_KEY".to_owned(), Value::Null);
    }
    let t = nested_mut(path, top, "tokens")?;
    put_tokens(t, c, "access_token", "refresh_token");
    put_opt(t, "id_token", c.metadata.id_token.as_ref().map(secret));
    put_opt(
        t,
        "account_id",
        c.metadata.account_id.clone().map(Value::from),
    );
    put_rfc3339(top, "last_refresh", c.last_refresh);
    Ok(())
}

fn write_qwen(top: &mut Map<String, Value>, c: &Credential, creating: bool) {
    put_tokens(top, c, "access_token", "refresh_token");
    put_millis(top, "expiry_date", c.expires_at);
    put_opt(
        top,
        "resource_url",
        c.metadata.resource_url.clone().map(Value::from),
    );
    put_opt(top, "id_token", c.metadata.id_token.as_ref().map(secret));
    if creating {
        top.insert("token_type".to_owned(), Value::from("Bearer"));
    }
}

fn write_cliproxy(
    path: &Path,
    top: &mut Map<String, Value>,
    c: &Credential,
    provider: &str,
) -> Result<(), AccountError> {
    let kind = match top.get("type").and_then(Value::as_str) {
        Some(kind) => kind.to_owned(),
        None => {
            let kind = cliproxy_type_of_provider(provider).to_owned();
            top.insert("type".to_owned(), Value::from(kind.clone()));
            kind
        }
    };
    if provider_of_cliproxy_type(&kind) == providers::GEMINI {
        let t = nested_mut(path, top, "token")?;
        put_tokens(t, c, "access_token", "refresh_token");
        put_rfc3339(t, "expiry", c.expires_at);
    } else {
        put_tokens(top, c, "access_token", "refresh_token");
        put_rfc3339(top, "expired", c.expires_at);
        put_rfc3339(top, "last_refresh", c.last_refresh);
        put_opt(top, "id_token", c.metadata.id_token.as_ref().map(secret));
        put_opt(
            top,
            "account_id",
            c.metadata.account_id.clone().map(Value::from),
        );
        put_opt(
            top,
            "resource_url",
            c.metadata.resource_url.clone().map(Value::from),
        );
    }
    if !top.contains_key("email") {
        put_opt(top, "email", c.metadata.email.clone().map(Value::from));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_tolerates_odd_values() {
        use serde_json::json;
        assert_eq!(
            millis_time(&json!(1_769_159_945_362.75)).map(|t| t.timestamp_millis()),
            Some(1_769_159_945_362)
        );
        assert_eq!(
            millis_time(&json!("1700000000000")).map(|t| t.timestamp()),
            Some(1_700_000_000)
        );
        for odd in [
            json!(-5),
            json!(1e300),
            json!("soon"),
            json!(null),
            json!([1]),
            json!(true),
        ] {
            assert_eq!(millis_time(&odd), None, "{odd}");
        }
    }

    #[test]
    fn cliproxy_types_map_both_ways() {
        for (kind, provider) in [
            ("claude", providers::ANTHROPIC),
            ("codex", providers::OPENAI),
            ("qwen", providers::QWEN),
            ("gemini", providers::GEMINI),
            ("iflow", "iflow"),
        ] {
            assert_eq!(provider_of_cliproxy_type(kind), provider);
            assert_eq!(cliproxy_type_of_provider(provider), kind);
        }
    }
}
