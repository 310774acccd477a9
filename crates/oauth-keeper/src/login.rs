//! `keeper login <provider>`: sign an account in from the terminal and write its file.

use std::io::Write;

use oauth_signin::SigninPrompt;

use crate::error::KeeperError;
use crate::keeper::{Keeper, SigninStatus};
use crate::providers::ProviderKind;

/// Starts a sign-in, writes the prompt to `out` (the URL to open, or the code to enter),
/// waits for it to finish and returns the account id. The account file is written into the
/// directory (and its pool, when this keeper serves one).
///
/// # Errors
/// [`KeeperError`] when the sign-in cannot start or fails.
pub async fn login(
    keeper: &Keeper,
    kind: ProviderKind,
    account: Option<&str>,
    out: &mut (dyn Write + Send),
) -> Result<String, KeeperError> {
    let started = keeper.start_signin(kind, account).await?;
    let _ = match &started.prompt {
        SigninPrompt::OpenUrl { url } => {
            writeln!(
                out,
                "Open this URL in a browser on this machine to sign in to {kind}:\n\n  {url}\n"
            )
        }
        SigninPrompt::EnterCode {
            user_code,
            verification_uri,
            verification_uri_complete,
            ..
        } => {
            let link = verification_uri_complete
                .as_deref()
                .unwrap_or(verification_uri);
            writeln!(
                out,
                "Go to {verification_uri} (or {link}) and enter the code:\n\n  {user_code}\n"
            )
        }
        _ => writeln!(out, "Follow the provider's instructions to sign in."),
    };
    let _ = out.flush();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tick.tick().await;
        match keeper.signin_status(&started.signin) {
            Some(SigninStatus::Done { account, .. }) => return Ok(account),
            Some(SigninStatus::Failed { reason, .. }) => {
                return Err(KeeperError::Install {
                    provider: kind,
                    reason,
                });
            }
            Some(_) => {}
            None => {
                return Err(KeeperError::Install {
                    provider: kind,
                    reason: "the sign-in was forgotten".into(),
                });
            }
        }
    }
}
