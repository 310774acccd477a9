//! Usage from whole answers and from streams.

use oauth_core::{FailureKind, Usage};
use oauth_providers::{Cause, ClassifyResponse, OVERLOADED, Provider, SseUsage};

use crate::support::{now, secs};

fn usage(prompt: u64, completion: u64, total: u64) -> Option<Usage> {
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: total,
    })
}

#[test]
fn whole_answers_of_every_provider() {
    let cases = [
        (
            Provider::OpenAi,
            include_str!("fixtures/openai/chat_completion.json"),
            usage(19, 10, 29),
        ),
        (
            Provider::Codex,
            include_str!("fixtures/codex/response.json"),
            usage(328, 52, 380),
        ),
        // Cache writes and reads count as prompt tokens; Anthropic sends no total.
        (
            Provider::Anthropic,
            include_str!("fixtures/anthropic/message.json"),
            usage(2200, 503, 0),
        ),
        // Thinking tokens count as completion tokens.
        (
            Provider::Gemini,
            include_str!("fixtures/gemini/generate_content.json"),
            usage(8, 42, 50),
        ),
        (
            Provider::CodeAssist,
            include_str!("fixtures/code_assist/generate_content.json"),
            usage(11, 4, 15),
        ),
        (
            Provider::Qwen,
            include_str!("fixtures/qwen/native_generation.json"),
            usage(22, 8, 30),
        ),
        (
            Provider::Qwen,
            include_str!("fixtures/openai/chat_completion.json"),
            usage(19, 10, 29),
        ),
    ];
    for (provider, body, want) in cases {
        assert_eq!(provider.usage(body.as_bytes()), want, "{provider}");
    }
    assert_eq!(
        Provider::Anthropic
            .usage(include_str!("fixtures/anthropic/message.json").as_bytes())
            .map(|u| u.tokens()),
        Some(2703)
    );
    assert_eq!(Provider::OpenAi.usage(b"{}"), None);
    assert_eq!(Provider::OpenAi.usage(b"not json"), None);
    assert_eq!(Provider::OpenAi.usage(br#"{"usage":null}"#), None);
    assert_eq!(
        Provider::OpenAi.usage(br#"{"usage":{"prompt_tokens":-1}}"#),
        None
    );
}

fn stream(provider: Provider, sse: &str, chunk: usize) -> SseUsage {
    let mut s = provider.stream_usage();
    for part in sse.as_bytes().chunks(chunk) {
        s.feed(part, now());
    }
    s.finish(now());
    s
}

#[test]
fn streamed_usage_in_every_dialect_and_any_chunking() {
    let cases = [
        (
            Provider::OpenAi,
            include_str!("fixtures/sse/openai_chat.sse"),
            usage(9, 2, 11),
            4,
        ),
        (
            Provider::Codex,
            include_str!("fixtures/sse/codex_responses.sse"),
            usage(40, 7, 47),
            3,
        ),
        (
            Provider::Anthropic,
            include_str!("fixtures/sse/anthropic.sse"),
            usage(25, 15, 0),
            7,
        ),
        (
            Provider::Gemini,
            include_str!("fixtures/sse/gemini.sse"),
            usage(6, 4, 10),
            2,
        ),
        (
            Provider::CodeAssist,
            include_str!("fixtures/sse/code_assist.sse"),
            usage(5, 3, 8),
            2,
        ),
        (
            Provider::Qwen,
            include_str!("fixtures/sse/qwen.sse"),
            usage(12, 3, 15),
            3,
        ),
    ];
    for (provider, sse, want, events) in cases {
        for chunk in [1, 2, 5, 64, 100_000] {
            let s = stream(provider, sse, chunk);
            assert_eq!(s.usage(), want, "{provider} chunk {chunk}");
            assert!(s.error().is_none(), "{provider}");
            assert!(s.events() >= events, "{provider}: {} events", s.events());
        }
    }
}

#[test]
fn error_events_are_classified() {
    let s = stream(
        Provider::Anthropic,
        include_str!("fixtures/sse/anthropic_overloaded.sse"),
        9,
    );
    let e = s.error().expect("the error event");
    assert_eq!(
        (e.kind, e.cause, e.status),
        (OVERLOADED, Cause::Overloaded, 529)
    );
    assert_eq!(s.usage(), usage(25, 1, 0));

    let s = stream(
        Provider::Codex,
        include_str!("fixtures/sse/codex_failed.sse"),
        5,
    );
    let e = s.error().expect("response.failed");
    assert_eq!((e.kind, e.status), (FailureKind::rate_limited(None), 429));

    let s = stream(
        Provider::Gemini,
        include_str!("fixtures/sse/gemini_error.sse"),
        5,
    );
    let e = s.error().expect("the error object");
    assert_eq!(e.kind, FailureKind::rate_limited(secs(20)));
}

#[test]
fn a_truncated_or_garbled_stream_never_fails() {
    let sse = include_str!("fixtures/sse/anthropic.sse");
    let mut s = Provider::Anthropic.stream_usage();
    s.feed(&sse.as_bytes()[..sse.len() / 2], now());
    s.feed(&[0xff, 0xfe, b'\n', b'\n', b':', b'x', b'\n'], now());
    s.finish(now());
    assert_eq!(s.usage(), usage(25, 1, 0));
    // A line that never ends is dropped, not buffered without bound.
    let mut s = Provider::OpenAi.stream_usage();
    s.feed(b"data: ", now());
    for _ in 0..40 {
        s.feed(&[b'x'; 64 * 1024], now());
    }
    s.feed(b"\n\ndata: {\"usage\":{\"total_tokens\":3}}\n\n", now());
    assert_eq!(s.usage(), usage(0, 0, 3));
}
