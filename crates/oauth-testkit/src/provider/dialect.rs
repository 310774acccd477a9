//! The fake provider's dialects: success bodies, streamed (SSE) answers and error answers shaped
//! as OpenAI, Codex (Responses API), Anthropic, Gemini, Gemini Code Assist and Qwen answer.
//!
//! The error answers reproduce the providers' documented shapes (the same ones `oauth-providers`
//! keeps as test fixtures; they are duplicated here as data so that the testkit depends on
//! `oauth-core` only).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use oauth_core::Usage;
use serde_json::{Value, json};

/// Which provider the fake imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Dialect {
    /// OpenAI Chat Completions (also Qwen's OpenAI-compatible mode): `usage.prompt_tokens`...
    #[default]
    OpenAi,
    /// The OpenAI Responses API as Codex uses it: `usage.input_tokens`, `response.completed`.
    Codex,
    /// Anthropic Messages: `usage.input_tokens` / `output_tokens`, `message_start` /
    /// `message_delta` events.
    Anthropic,
    /// Gemini `generateContent`: `usageMetadata`.
    Gemini,
    /// Gemini Code Assist: the Gemini answer under `response`.
    CodeAssist,
    /// Qwen (OpenAI-compatible, as Qwen OAuth's endpoint answers).
    Qwen,
}

/// A scripted answer: status, headers and body, verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScriptedAnswer {
    /// The HTTP status.
    pub status: u16,
    /// Headers (name, value).
    pub headers: Vec<(String, String)>,
    /// The body (JSON for every dialect).
    pub body: String,
}

impl ScriptedAnswer {
    /// An answer with `status`, a JSON `body` and no extra headers.
    pub fn new(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// OpenAI 429 "Rate limit reached" with the token limit exhausted and
/// `x-ratelimit-reset-tokens` in Go duration form (`wait` as whole seconds: "6m0s" style).
pub fn openai_rate_limit(wait: Duration) -> ScriptedAnswer {
    let s = ceil_secs(wait);
    ScriptedAnswer::new(
        429,
        json!({"error": {"message": "Rate limit reached for gpt-4o on tokens per min (TPM).",
            "type": "tokens", "param": null, "code": "rate_limit_exceeded"}}),
    )
    .header("x-ratelimit-remaining-requests", "99")
    .header("x-ratelimit-remaining-tokens", "0")
    .header("x-ratelimit-reset-requests", "1s")
    .header(
        "x-ratelimit-reset-tokens",
        format!("{}m{}s", s / 60, s % 60),
    )
}

/// Codex 429 `usage_limit_reached` with `resets_in_seconds` (and the matching `resets_at`).
pub fn codex_usage_limit(resets_in: Duration, now: DateTime<Utc>) -> ScriptedAnswer {
    let s = ceil_secs(resets_in);
    let at = now
        .timestamp()
        .saturating_add(i64::try_from(s).unwrap_or(i64::MAX));
    ScriptedAnswer::new(
        429,
        json!({"error": {"type": "usage_limit_reached", "message": "The usage limit has been reached",
            "plan_type": "plus", "resets_in_seconds": s, "resets_at": at}}),
    )
}

/// Anthropic 429 `rate_limit_error` with `anthropic-ratelimit-tokens-reset` at `reset_at`
/// (RFC 3339) and that limit's `remaining` at 0; no `retry-after`.
pub fn anthropic_rate_limit(reset_at: DateTime<Utc>) -> ScriptedAnswer {
    ScriptedAnswer::new(
        429,
        json!({"type": "error", "error": {"type": "rate_limit_error",
            "message": "This request would exceed the rate limit for your organization."},
            "request_id": "req_fake"}),
    )
    .header("anthropic-ratelimit-tokens-remaining", "0")
    .header("anthropic-ratelimit-tokens-reset", rfc3339(reset_at))
    .header("anthropic-ratelimit-requests-remaining", "10")
    .header("anthropic-ratelimit-requests-reset", rfc3339(reset_at))
}

/// Anthropic 529 `overloaded_error`.
pub fn anthropic_overloaded() -> ScriptedAnswer {
    ScriptedAnswer::new(
        529,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"},
            "request_id": "req_fake"}),
    )
}

fn gemini_exhausted(quota_id: &str, retry_delay: Duration) -> Value {
    json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
                "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                "quotaId": quota_id, "quotaValue": "5"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": format!("{}s", ceil_secs(retry_delay))}]}})
}

/// Gemini 429 `RESOURCE_EXHAUSTED` on a per-minute quota with `RetryInfo.retryDelay`.
pub fn gemini_per_minute(retry_delay: Duration) -> ScriptedAnswer {
    ScriptedAnswer::new(
        429,
        gemini_exhausted(
            "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            retry_delay,
        ),
    )
}

/// Gemini 429 `RESOURCE_EXHAUSTED` on a per-day quota (resets at midnight Pacific time).
pub fn gemini_per_day() -> ScriptedAnswer {
    ScriptedAnswer::new(
        429,
        gemini_exhausted(
            "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
            Duration::from_secs(13),
        ),
    )
}

/// Gemini 503 `UNAVAILABLE` "The model is overloaded".
pub fn gemini_overloaded() -> ScriptedAnswer {
    ScriptedAnswer::new(
        503,
        json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
            "status": "UNAVAILABLE"}}),
    )
}

/// Code Assist 429 `MODEL_CAPACITY_EXHAUSTED` (one-element array, as its stream endpoint answers).
pub fn code_assist_capacity() -> ScriptedAnswer {
    ScriptedAnswer::new(
        429,
        json!([{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
            "message": "No capacity available for model on the server",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "MODEL_CAPACITY_EXHAUSTED", "domain": "cloudcode-pa.googleapis.com"}]}}]),
    )
}

/// Qwen 429 `Throttling.RateQuota` (OpenAI-compatible shape) with `Retry-After` in seconds.
pub fn qwen_throttling(retry_after: Duration) -> ScriptedAnswer {
    ScriptedAnswer::new(
        429,
        json!({"error": {"code": "Throttling.RateQuota", "type": "Throttling.RateQuota",
            "message": "Requests rate limit exceeded, please try again later.", "param": null}}),
    )
    .header("retry-after", ceil_secs(retry_after).to_string())
}

/// Qwen 429 `insufficient_quota` (Qwen OAuth's free daily allowance used up; no reset given).
pub fn qwen_free_quota() -> ScriptedAnswer {
    ScriptedAnswer::new(
        429,
        json!({"error": {"code": "insufficient_quota", "type": "insufficient_quota",
            "message": "Free allocated quota exceeded.", "param": null}}),
    )
}

/// A `200` stream whose second event is Gemini's `RESOURCE_EXHAUSTED` error with a
/// `retryDelay` (a stream that fails after its first bytes with the provider's own error event).
pub fn gemini_stream_error(retry_delay: Duration) -> ScriptedAnswer {
    let first = json!({"candidates": [{"content": {"parts": [{"text": "Hel"}], "role": "model"}}]});
    let error = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
        "message": "Resource has been exhausted (e.g. check quota).",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{}s", ceil_secs(retry_delay))}]}});
    ScriptedAnswer {
        status: 200,
        headers: vec![("content-type".to_owned(), "text/event-stream".to_owned())],
        body: format!("{}{}", event(None, &first), event(None, &error)),
    }
}

/// A successful whole answer in `dialect`.
pub(crate) fn success_body(dialect: Dialect, id: u64, text: &str, usage: Usage) -> Value {
    match dialect {
        Dialect::OpenAi | Dialect::Qwen => json!({
            "id": format!("chatcmpl-{id}"), "object": "chat.completion", "model": "fake-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                "finish_reason": "stop"}],
            "usage": {"prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens, "total_tokens": usage.total_tokens},
        }),
        Dialect::Codex => json!({
            "id": format!("resp_{id}"), "object": "response", "status": "completed",
            "output": [{"type": "message", "role": "assistant",
                "content": [{"type": "output_text", "text": text}]}],
            "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens},
        }),
        Dialect::Anthropic => json!({
            "id": format!("msg_{id}"), "type": "message", "role": "assistant", "model": "fake-model",
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
        }),
        Dialect::Gemini => gemini_body(text, usage, true),
        Dialect::CodeAssist => json!({"response": gemini_body(text, usage, true),
            "traceId": format!("trace-{id}")}),
    }
}

fn gemini_body(text: &str, usage: Usage, last: bool) -> Value {
    let mut v = json!({
        "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}}],
        "usageMetadata": {"promptTokenCount": usage.prompt_tokens,
            "candidatesTokenCount": usage.completion_tokens, "totalTokenCount": usage.total_tokens},
    });
    if last {
        v["candidates"][0]["finishReason"] = json!("STOP");
    }
    v
}

fn event(name: Option<&str>, data: &Value) -> String {
    match name {
        Some(n) => format!("event: {n}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

/// A streamed answer in `dialect`: several events, the usage in the dialect's usage events.
/// The first event never carries the final usage.
pub(crate) fn stream_events(dialect: Dialect, id: u64, text: &str, usage: Usage) -> Vec<String> {
    let (a, b) = text.split_at(text.len() / 2);
    match dialect {
        Dialect::OpenAi | Dialect::Qwen => vec![
            event(
                None,
                &json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": a}}], "usage": null}),
            ),
            event(
                None,
                &json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": b}, "finish_reason": "stop"}], "usage": null}),
            ),
            event(
                None,
                &json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion.chunk",
                "choices": [], "usage": {"prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens, "total_tokens": usage.total_tokens}}),
            ),
            "data: [DONE]\n\n".to_owned(),
        ],
        Dialect::Codex => vec![
            event(
                Some("response.created"),
                &json!({"type": "response.created",
                "response": {"id": format!("resp_{id}"), "status": "in_progress"}}),
            ),
            event(
                Some("response.output_text.delta"),
                &json!({"type": "response.output_text.delta", "delta": a}),
            ),
            event(
                Some("response.output_text.delta"),
                &json!({"type": "response.output_text.delta", "delta": b}),
            ),
            event(
                Some("response.completed"),
                &json!({"type": "response.completed",
                "response": {"id": format!("resp_{id}"), "status": "completed",
                "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens,
                    "total_tokens": usage.total_tokens}}}),
            ),
        ],
        Dialect::Anthropic => vec![
            event(
                Some("message_start"),
                &json!({"type": "message_start", "message": {
                "id": format!("msg_{id}"), "type": "message", "role": "assistant", "content": [],
                "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": 1}}}),
            ),
            event(
                Some("content_block_delta"),
                &json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": a}}),
            ),
            event(
                Some("content_block_delta"),
                &json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": b}}),
            ),
            event(
                Some("message_delta"),
                &json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": usage.completion_tokens}}),
            ),
            event(Some("message_stop"), &json!({"type": "message_stop"})),
        ],
        Dialect::Gemini | Dialect::CodeAssist => {
            let partial = Usage {
                completion_tokens: 1,
                total_tokens: usage.prompt_tokens + 1,
                ..usage
            };
            let wrap = |v: Value| {
                if dialect == Dialect::CodeAssist {
                    json!({ "response": v })
                } else {
                    v
                }
            };
            vec![
                event(None, &wrap(gemini_body(a, partial, false))),
                event(None, &wrap(gemini_body(b, usage, true))),
            ]
        }
    }
}
