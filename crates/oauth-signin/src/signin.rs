//! One entry point for both flows: start, show the prompt, finish.

use std::fmt;
use std::time::Duration;

use oauth_core::Credential;

use crate::authcode::AuthorizationCodeSignin;
use crate::config::{SigninFlow, SigninOptions};
use crate::device::DeviceSignin;
use crate::error::SigninError;

/// What the user must do to sign in.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SigninPrompt {
    /// Open this URL in a browser on this machine (the redirect comes back to a loopback port).
    OpenUrl {
        /// The authorization URL.
        url: String,
    },
    /// Go to `verification_uri` (on any device) and enter `user_code`.
    EnterCode {
        /// The code to enter.
        user_code: String,
        /// Where to enter it.
        verification_uri: String,
        /// The URI with the code filled in, when the server sent one.
        verification_uri_complete: Option<String>,
        /// How long the code stays valid.
        expires_in: Duration,
    },
}

impl fmt::Debug for SigninPrompt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL's query carries the state and the user code is a short-lived credential:
        // neither is printed.
        match self {
            Self::OpenUrl { url } => f
                .debug_struct("OpenUrl")
                .field("url", &url.split('?').next().unwrap_or(""))
                .finish_non_exhaustive(),
            Self::EnterCode {
                verification_uri,
                expires_in,
                ..
            } => f
                .debug_struct("EnterCode")
                .field("verification_uri", verification_uri)
                .field("expires_in", expires_in)
                .finish_non_exhaustive(),
        }
    }
}

/// A started sign-in of either flow.
#[derive(Debug)]
#[non_exhaustive]
pub enum PendingSignin {
    /// Authorization code on a loopback redirect.
    Browser(AuthorizationCodeSignin),
    /// Device authorization.
    Device(DeviceSignin),
}

impl PendingSignin {
    /// Starts `flow`: binds the loopback listener, or requests the device code.
    ///
    /// # Errors
    /// See [`AuthorizationCodeSignin::start`] and [`DeviceSignin::start`].
    pub async fn start(
        flow: SigninFlow,
        http: reqwest::Client,
        options: SigninOptions,
    ) -> Result<Self, SigninError> {
        Ok(match flow {
            SigninFlow::AuthorizationCode(c) => {
                Self::Browser(AuthorizationCodeSignin::start(c, http, options).await?)
            }
            SigninFlow::Device(c) => Self::Device(DeviceSignin::start(c, http, options).await?),
        })
    }

    /// What to show the user.
    pub fn prompt(&self) -> SigninPrompt {
        match self {
            Self::Browser(s) => SigninPrompt::OpenUrl {
                url: s.authorization_url().to_owned(),
            },
            Self::Device(s) => SigninPrompt::EnterCode {
                user_code: s.user_code().to_owned(),
                verification_uri: s.verification_uri().to_owned(),
                verification_uri_complete: s.verification_uri_complete().map(str::to_owned),
                expires_in: s.expires_in(),
            },
        }
    }

    /// Waits for the user and returns the signed-in credential with id `id`. The future is
    /// `Send + 'static`: spawn it to answer "start a sign-in" at once and finish in the
    /// background. Rename the credential afterwards (its `id` field is public) if the id should
    /// come from `metadata.email`.
    ///
    /// # Errors
    /// See [`AuthorizationCodeSignin::finish`] and [`DeviceSignin::finish`].
    pub async fn finish(self, id: &str) -> Result<Credential, SigninError> {
        match self {
            Self::Browser(s) => s.finish(id).await,
            Self::Device(s) => s.finish(id).await,
        }
    }
}
