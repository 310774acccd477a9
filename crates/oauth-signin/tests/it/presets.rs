//! Every preset signs in against the fake provider once pointed at it: the presets' shapes
//! (Claude's JSON request with `state` and `code=true`, Codex's extra parameters, Qwen's device
//! flow with PKCE) are accepted by a strict server.

use oauth_core::ExposeSecret;
use oauth_signin::{PendingSignin, Provider, SigninFlow, SigninOptions, SigninPrompt};
use oauth_testkit::authorization_server::{
    AuthorizationServer, AuthorizationServerConfig, ClientRegistration,
};
use serde_json::json;

use crate::support::{browser, http, redirect_of, servers};

/// The preset with its endpoints moved to `server` (and Codex's fixed port 1455 replaced by an
/// ephemeral one, which a shared test machine may not have free).
fn pointed_at(provider: Provider, server: &AuthorizationServer) -> SigninFlow {
    match provider.flow() {
        SigninFlow::AuthorizationCode(mut c) => {
            c.authorize_url = server.authorize_url();
            c.token_url = server.token_url();
            c.redirect_port = 0;
            SigninFlow::AuthorizationCode(c)
        }
        SigninFlow::Device(mut c) => {
            c.device_authorization_url = server.device_authorization_url();
            c.token_url = server.token_url();
            SigninFlow::Device(c)
        }
        other => other,
    }
}

#[tokio::test]
async fn every_preset_signs_in_against_a_strict_server() {
    for provider in Provider::ALL {
        let (tokens, server) = servers(AuthorizationServerConfig::default()).await;
        let flow = pointed_at(provider, &server);
        let client_id = flow.client_id().to_owned();
        let mut registration = ClientRegistration::new(&client_id).with_id_token_claims(
            json!({ "sub": "s", "email": format!("{provider}@example.com") }),
        );
        if provider == Provider::Qwen {
            registration = registration.with_token_field("resource_url", "portal.qwen.test");
        }
        // A device request needs the client registered first; a browser flow adds its
        // redirect URI once the listener is bound.
        server.register_client(registration.clone());
        // The device flow's poll runs on the paused clock below: no per-request timer.
        let options = match &flow {
            SigninFlow::Device(_) => SigninOptions::default().with_request_timeout(None),
            _ => SigninOptions::default(),
        };
        let pending = PendingSignin::start(flow.clone(), http(), options)
            .await
            .expect("starts");
        if let PendingSignin::Browser(s) = &pending {
            server.register_client(registration.with_redirect_uri(s.redirect_uri()));
        }

        let id = format!("{provider}-1");
        let cred = match pending.prompt() {
            SigninPrompt::OpenUrl { url } => {
                let SigninFlow::AuthorizationCode(c) = &flow else {
                    panic!("{provider}: a browser flow");
                };
                for (k, v) in &c.extra_authorize_params {
                    assert!(url.contains(&format!("{k}={v}")), "{provider}: {k} is sent");
                }
                // A `localhost` redirect is followed to the listener's address.
                let mut redirect = redirect_of(&url).await;
                redirect.set_host(Some("127.0.0.1")).expect("host");
                let (cred, page) =
                    tokio::join!(pending.finish(&id), browser().get(redirect).send());
                assert_eq!(page.expect("page").status().as_u16(), 200, "{provider}");
                cred
            }
            SigninPrompt::EnterCode { user_code, .. } => {
                assert!(server.approve_user_code(&user_code));
                // One 5 s interval, on the paused clock.
                tokio::time::pause();
                let cred = pending.finish(&id).await;
                tokio::time::resume();
                cred
            }
            _ => panic!("{provider}: an unknown prompt"),
        }
        .unwrap_or_else(|e| panic!("{provider}: {e}"));
        assert_eq!(cred.client_id, client_id, "{provider}");
        assert_eq!(
            cred.metadata.email.as_deref(),
            Some(format!("{provider}@example.com").as_str())
        );
        assert!(
            tokens.is_access_token_valid(cred.access_token.expose_secret()),
            "{provider}"
        );
        if provider == Provider::Qwen {
            assert_eq!(
                cred.metadata.resource_url.as_deref(),
                Some("portal.qwen.test")
            );
        }
    }
}
