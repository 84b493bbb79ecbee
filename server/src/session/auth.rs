//! Who may connect: a token given as the passcode, a verified client
//! certificate (with `tls.cert_login`), configured users by login and
//! passcode, anonymous clients as `anonymous` allows. (Failed logins are
//! slowed down by the driver, with `security::LoginThrottle`.)

use super::settings::{AnonymousAccess, SessionSettings};
use crate::error::SessionError;
use crate::protocol::Connect;
use crate::security::passwords;
use crate::security::permissions::Grants;
use crate::security::tokens::{TokenVerifier, VerifiedToken};

/// The login a CONNECT without credentials gets.
pub(super) const ANONYMOUS: &str = "(anonymous)";

/// Who a CONNECT proved to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Identity {
    /// The login (`(anonymous)` without one).
    pub login: String,
    /// When it came from a token: its expiry and permissions claim.
    pub token: Option<TokenGrant>,
}

/// What a token grants beyond the login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TokenGrant {
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: u64,
    /// The token's own permissions, replacing the configured ones.
    pub permissions: Option<Grants>,
}

impl From<VerifiedToken> for Identity {
    fn from(token: VerifiedToken) -> Identity {
        Identity {
            login: token.login,
            token: Some(TokenGrant {
                expires_at: token.expires_at,
                permissions: token.permissions,
            }),
        }
    }
}

impl Identity {
    fn login(login: &str) -> Identity {
        Identity {
            login: login.to_string(),
            token: None,
        }
    }
}

/// Checks a CONNECT's credentials for a client on loopback or not, whose
/// transport may have verified a client certificate naming `certificate_login`.
pub(super) fn authenticate(
    settings: &SessionSettings,
    peer_is_loopback: bool,
    certificate_login: Option<&str>,
    connect: &Connect,
) -> Result<Identity, SessionError> {
    if let (Some(tokens), Some(passcode)) = (&settings.tokens, &connect.passcode)
        && TokenVerifier::looks_like_token(passcode)
    {
        let token = tokens
            .verify(passcode)
            .map_err(SessionError::TokenRefused)?;
        if connect.login.as_ref().is_some_and(|l| *l != token.login) {
            return Err(SessionError::TokenRefused(
                crate::security::tokens::TokenError::Claims(
                    "the login header is not the token's sub (leave login out, or give the same)"
                        .into(),
                ),
            ));
        }
        return Ok(token.into());
    }
    if let Some(cert) = certificate_login
        && connect.login.as_deref().is_none_or(|l| l == cert)
    {
        // The certificate was checked against the configured CA in the
        // TLS handshake: it is the credential.
        return Ok(Identity::login(cert));
    }
    match (&connect.login, &connect.passcode) {
        (Some(login), passcode) if !settings.users.is_empty() => {
            let passcode = passcode.as_deref().unwrap_or_default();
            match settings.users.get(login) {
                Some(hash) if passwords::verify(hash, passcode) => Ok(Identity::login(login)),
                Some(_) => Err(SessionError::AuthenticationFailed),
                None => {
                    // As long as a wrong password takes: no telling which logins exist.
                    passwords::verify_nobody(passcode);
                    Err(SessionError::AuthenticationFailed)
                }
            }
        }
        (login, _) => {
            let login = login.as_deref().unwrap_or(ANONYMOUS);
            match settings.anonymous {
                AnonymousAccess::Always => Ok(Identity::login(login)),
                AnonymousAccess::Loopback if peer_is_loopback => Ok(Identity::login(login)),
                AnonymousAccess::Loopback => Err(SessionError::AnonymousRefused(
                    "anonymous access is allowed from loopback only; log in as a configured user",
                )),
                AnonymousAccess::Never => Err(SessionError::AnonymousRefused(
                    "anonymous access is disabled; log in as a configured user",
                )),
            }
        }
    }
}
