//! Token usage from the providers' answer shapes, whole or streamed (server-sent events).

use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode};
use oauth_core::Usage;
use serde_json::Value;

use crate::classification::Classification;
use crate::{ClassifyResponse, Provider};

/// The usage of a JSON answer (or of one streamed event), whatever the provider's shape:
/// - OpenAI Chat Completions (and Qwen's OpenAI-compatible mode): `usage.{prompt_tokens,
///   completion_tokens, total_tokens}`;
/// - OpenAI Responses (Codex), Anthropic Messages and DashScope native:
///   `usage.{input_tokens, output_tokens, total_tokens}`; Anthropic's
///   `cache_creation_input_tokens` and `cache_read_input_tokens` count as prompt tokens;
/// - Gemini: `usageMetadata.{promptTokenCount, candidatesTokenCount, thoughtsTokenCount,
///   totalTokenCount}` (thinking tokens count as completion tokens);
/// - Code Assist: the same under `response.usageMetadata`;
/// - streamed events: `response.usage` (Responses API `response.completed`) and
///   `message.usage` (Anthropic `message_start`).
///
/// `None` when no known usage object is present.
pub fn usage_from_json(v: &Value) -> Option<Usage> {
    const PLACES: [&str; 5] = [
        "/usage",
        "/usageMetadata",
        "/response/usageMetadata",
        "/response/usage",
        "/message/usage",
    ];
    PLACES
        .iter()
        .filter_map(|p| v.pointer(p))
        .find_map(usage_object)
}

fn usage_object(u: &Value) -> Option<Usage> {
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    let any = |ks: &[&str]| ks.iter().any(|k| n(k).is_some());
    if any(&["prompt_tokens", "completion_tokens", "total_tokens"])
        && !any(&["input_tokens", "output_tokens"])
    {
        return Some(Usage {
            prompt_tokens: n("prompt_tokens").unwrap_or(0),
            completion_tokens: n("completion_tokens").unwrap_or(0),
            total_tokens: n("total_tokens").unwrap_or(0),
        });
    }
    if any(&["input_tokens", "output_tokens"]) {
        let prompt = n("input_tokens")
            .unwrap_or(0)
            .saturating_add(n("cache_creation_input_tokens").unwrap_or(0))
            .saturating_add(n("cache_read_input_tokens").unwrap_or(0));
        return Some(Usage {
            prompt_tokens: prompt,
            completion_tokens: n("output_tokens").unwrap_or(0),
            total_tokens: n("total_tokens").unwrap_or(0),
        });
    }
    if any(&[
        "promptTokenCount",
        "candidatesTokenCount",
        "totalTokenCount",
    ]) {
        return Some(Usage {
            prompt_tokens: n("promptTokenCount").unwrap_or(0),
            completion_tokens: n("candidatesTokenCount")
                .unwrap_or(0)
                .saturating_add(n("thoughtsTokenCount").unwrap_or(0)),
            total_tokens: n("totalTokenCount").unwrap_or(0),
        });
    }
    None
}

/// The usage of a whole JSON answer body.
pub fn usage_from_body(body: &[u8]) -> Option<Usage> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .as_ref()
        .and_then(usage_from_json)
}

/// Lines longer than this are dropped (an SSE line that never ends must not grow memory).
const MAX_LINE: usize = 1 << 20;

/// Reads a server-sent-events stream as it passes, keeping the latest usage it reports and the
/// first error event it carries. Feed it the body's chunks in order; it never fails.
///
/// Usage counts in every dialect are cumulative (Anthropic's `message_delta.usage`, Gemini's
/// per-chunk `usageMetadata`) or sent once (OpenAI's final chunk with `stream_options.
/// include_usage`, the Responses API's `response.completed`), so each field keeps its largest
/// value seen.
#[derive(Debug, Clone)]
pub struct SseUsage {
    provider: Provider,
    line: Vec<u8>,
    overlong: bool,
    event: String,
    data: String,
    usage: Option<Usage>,
    error: Option<Classification>,
    events: u64,
}

impl SseUsage {
    /// A reader for `provider`'s dialect.
    pub const fn new(provider: Provider) -> Self {
        Self {
            provider,
            line: Vec::new(),
            overlong: false,
            event: String::new(),
            data: String::new(),
            usage: None,
            error: None,
            events: 0,
        }
    }

    /// Reads the next chunk of the stream; `now` is used to classify an error event.
    pub fn feed(&mut self, chunk: &[u8], now: DateTime<Utc>) {
        for &b in chunk {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                if !std::mem::replace(&mut self.overlong, false) {
                    self.line_done(&line, now);
                }
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            } else {
                self.overlong = true;
                self.line.clear();
            }
        }
    }

    /// Ends the stream: dispatches an event not followed by a blank line.
    pub fn finish(&mut self, now: DateTime<Utc>) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, now);
        }
        self.dispatch(now);
    }

    /// The usage reported so far.
    pub const fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// The first error event, classified.
    pub const fn error(&self) -> Option<&Classification> {
        self.error.as_ref()
    }

    /// Events dispatched so far.
    pub const fn events(&self) -> u64 {
        self.events
    }

    fn line_done(&mut self, line: &[u8], now: DateTime<Utc>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return self.dispatch(now);
        }
        let Ok(line) = std::str::from_utf8(line) else {
            return;
        };
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                if self.data.len() < MAX_LINE {
                    self.data.push_str(value);
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, now: DateTime<Utc>) {
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        if data.is_empty() {
            return;
        }
        self.events += 1;
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            return; // "[DONE]" and other non-JSON data
        };
        if let Some(u) = usage_from_json(&v) {
            let old = self.usage.unwrap_or_default();
            self.usage = Some(Usage {
                prompt_tokens: old.prompt_tokens.max(u.prompt_tokens),
                completion_tokens: old.completion_tokens.max(u.completion_tokens),
                total_tokens: old.total_tokens.max(u.total_tokens),
            });
        }
        if self.error.is_none() {
            self.error = stream_error(self.provider, &event, &v, now);
        }
    }
}

/// An error carried by a streamed event (Anthropic's `error` event, an OpenAI or Gemini error
/// object in a data line, the Responses API's `response.failed`), classified as if it had been
/// the answer's body with the status its type implies.
fn stream_error(
    provider: Provider,
    event: &str,
    v: &Value,
    now: DateTime<Utc>,
) -> Option<Classification> {
    let err = if let Some(e) = v.get("error").filter(|e| e.is_object()) {
        e.clone()
    } else if v.get("type").and_then(Value::as_str) == Some("response.failed") {
        v.pointer("/response/error").cloned().unwrap_or(Value::Null)
    } else if event == "error" {
        v.clone()
    } else {
        return None;
    };
    let status = err
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .or_else(|| {
            let ty = err
                .get("type")
                .or_else(|| err.get("code"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            Some(status_of_error_type(ty))
        })
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({ "error": err }).to_string();
    provider.classify(status, &HeaderMap::new(), body.as_bytes(), now)
}

/// The HTTP status an error type stands for, where a stream carries no status of its own.
fn status_of_error_type(ty: &str) -> u16 {
    match ty {
        "overloaded_error" => 529,
        "rate_limit_error"
        | "rate_limit_exceeded"
        | "usage_limit_reached"
        | "insufficient_quota"
        | "RESOURCE_EXHAUSTED" => 429,
        "authentication_error" | "invalid_api_key" => 401,
        "permission_error" => 403,
        "invalid_request_error" | "context_length_exceeded" => 400,
        _ => 500,
    }
}
