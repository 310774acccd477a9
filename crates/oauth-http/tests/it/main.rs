//! oauth-http integration tests: both adapters end to end against oauth-testkit's fake provider
//! (speaking each provider's dialect) and its strict token server, on 127.0.0.1.

mod middleware;
mod support;
mod tower;
