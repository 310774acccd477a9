//! oauth-providers integration tests: every provider's documented error bodies and headers
//! (fixtures under `fixtures/`), usage shapes whole and streamed, and robustness on random input.

mod anthropic;
mod gemini;
mod openai;
mod qwen;
mod robustness;
mod support;
mod usage;
