//! Which web pages may open `/ws`. A browser sends the page's origin with
//! every WebSocket handshake and lets any page connect anywhere, so without
//! this check any site open in a user's browser could talk to a broker on
//! localhost or the intranet with the user's network position (and, with
//! anonymous loopback access, as that user). Requests without an `Origin`
//! come from programs, not pages, and are let through: they are not
//! acting for a visitor.

/// The origins allowed to open WebSockets besides the broker's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins {
    /// Exact origins (`https://chat.example.com`), or `*` for any page.
    origins: Vec<String>,
}

/// Why a handshake's origin was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "origin {0:?} may not open WebSockets here: pages are allowed from the broker's own origin and from allowed_origins"
)]
pub struct OriginRefused(pub String);

impl AllowedOrigins {
    /// From the `allowed_origins` setting.
    pub fn new(origins: Vec<String>) -> AllowedOrigins {
        AllowedOrigins {
            origins: origins
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Checks a handshake's `Origin` against its `Host` (the broker's own
    /// page is served from the same host and port) and the list.
    pub fn check(&self, origin: Option<&str>, host: Option<&str>) -> Result<(), OriginRefused> {
        let Some(origin) = origin else {
            return Ok(());
        };
        let normalized = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.origins.iter().any(|o| o == "*" || *o == normalized) {
            return Ok(());
        }
        // Same origin: the page's host and port are the ones the request
        // was sent to (scheme-relative: behind TLS the page is https).
        let authority = normalized
            .strip_prefix("http://")
            .or_else(|| normalized.strip_prefix("https://"));
        if let (Some(authority), Some(host)) = (authority, host)
            && authority == host.to_ascii_lowercase()
        {
            return Ok(());
        }
        Err(OriginRefused(origin.chars().take(200).collect()))
    }

    /// Whether a setting's entries are origins (`scheme://host[:port]`) or `*`.
    pub fn validate(origins: &[String]) -> Result<(), String> {
        for o in origins {
            let ok = o == "*"
                || o == "null"
                || ((o.starts_with("http://") || o.starts_with("https://"))
                    && !o
                        .split_once("://")
                        .is_some_and(|(_, rest)| rest.trim_end_matches('/').contains('/')));
            if !ok {
                return Err(format!(
                    "{o:?} is not an origin: write scheme://host[:port], like https://chat.example.com, or *"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_page_and_programs_are_let_in_other_pages_are_not() {
        let none = AllowedOrigins::default();
        assert!(
            none.check(None, Some("localhost:15674")).is_ok(),
            "no Origin: a program"
        );
        assert!(
            none.check(Some("http://localhost:15674"), Some("localhost:15674"))
                .is_ok()
        );
        assert!(
            none.check(Some("https://chat.example.com"), Some("chat.example.com"))
                .is_ok()
        );
        assert!(
            none.check(Some("http://evil.example"), Some("localhost:15674"))
                .is_err()
        );
        assert!(
            none.check(Some("http://localhost:8080"), Some("localhost:15674"))
                .is_err(),
            "another port is another origin"
        );
        assert!(none.check(Some("null"), Some("localhost:15674")).is_err());
    }

    #[test]
    fn listed_origins_and_star() {
        let listed = AllowedOrigins::new(vec!["https://App.example.com/".into()]);
        assert!(
            listed
                .check(Some("https://app.example.com"), Some("broker:15674"))
                .is_ok()
        );
        assert!(
            listed
                .check(Some("https://other.example.com"), Some("broker:15674"))
                .is_err()
        );
        let any = AllowedOrigins::new(vec!["*".into()]);
        assert!(any.check(Some("http://evil.example"), Some("x")).is_ok());
        assert!(AllowedOrigins::validate(&["https://a.example:8443".into(), "*".into()]).is_ok());
        assert!(AllowedOrigins::validate(&["a.example".into()]).is_err());
        assert!(AllowedOrigins::validate(&["https://a.example/path".into()]).is_err());
    }
}
