//! Who may connect: configured users by login and passcode, anonymous
//! clients as `anonymous` allows. (Failed logins are slowed down by the
//! driver, with `security::LoginThrottle`.)

use super::settings::{AnonymousAccess, SessionSettings};
use crate::error::SessionError;
use crate::protocol::Connect;
use crate::security::passwords;

/// Checks a CONNECT's credentials for a client on loopback or not.
pub(super) fn authenticate(
    settings: &SessionSettings,
    peer_is_loopback: bool,
    connect: &Connect,
) -> Result<(), SessionError> {
    match (&connect.login, &connect.passcode) {
        (Some(login), passcode) if !settings.users.is_empty() => {
            let passcode = passcode.as_deref().unwrap_or_default();
            match settings.users.get(login) {
                Some(hash) if passwords::verify(hash, passcode) => Ok(()),
                Some(_) => Err(SessionError::AuthenticationFailed),
                None => {
                    // As long as a wrong password takes: no telling which logins exist.
                    passwords::verify_nobody(passcode);
                    Err(SessionError::AuthenticationFailed)
                }
            }
        }
        _ => match settings.anonymous {
            AnonymousAccess::Always => Ok(()),
            AnonymousAccess::Loopback if peer_is_loopback => Ok(()),
            AnonymousAccess::Loopback => Err(SessionError::AnonymousRefused(
                "anonymous access is allowed from loopback only; log in as a configured user",
            )),
            AnonymousAccess::Never => Err(SessionError::AnonymousRefused(
                "anonymous access is disabled; log in as a configured user",
            )),
        },
    }
}
