//! What a login may do with which destinations: RabbitMQ's three kinds of
//! permission, `read` (SUBSCRIBE), `write` (SEND, a last will) and
//! `configure` (creating durable subscriptions), each a list of
//! destination patterns where `*` matches any run of characters and
//! `{login}` stands for the connected login, so `/queue/user.{login}.*`
//! gives everyone their own queues. With no `[permissions]` in the config
//! everything is allowed, as before; with any, a login without an entry
//! of its own gets the `"*"` entry, and without that nothing.

use std::collections::HashMap;

use serde::Deserialize;

/// The three kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// SUBSCRIBE.
    Read,
    /// SEND, last will.
    Write,
    /// Creating broker state that outlives the connection (durable subscriptions).
    Configure,
}

impl Permission {
    /// Its name, as in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Configure => "configure",
        }
    }
}

/// One login's (or the default's) patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Destinations it may SUBSCRIBE to.
    #[serde(default)]
    pub read: Vec<String>,
    /// Destinations it may SEND to.
    #[serde(default)]
    pub write: Vec<String>,
    /// Destinations it may make durable subscriptions on.
    #[serde(default)]
    pub configure: Vec<String>,
}

/// Login → grants (`"*"`: everyone without an entry).
pub type PermissionTable = HashMap<String, Grants>;

/// Checks the patterns of a table.
pub fn validate(table: &PermissionTable) -> Result<(), String> {
    for (login, grants) in table {
        validate_grants(login, grants)?;
    }
    Ok(())
}

/// Checks one login's patterns.
pub fn validate_grants(login: &str, grants: &Grants) -> Result<(), String> {
    {
        for (kind, patterns) in [
            ("read", &grants.read),
            ("write", &grants.write),
            ("configure", &grants.configure),
        ] {
            for p in patterns {
                if !p.starts_with('/') && !p.starts_with('*') {
                    return Err(format!(
                        "{login:?} {kind} pattern {p:?} is not a destination pattern (like /queue/jobs.* or /topic/user.{{login}}.#)"
                    ));
                }
                let expanded = p.replace("{login}", "");
                if expanded.contains(['{', '}']) {
                    return Err(format!(
                        "{login:?} {kind} pattern {p:?} has a placeholder other than {{login}}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Whether `login` may do `what` with `destination` under `table`.
pub fn allows(table: &PermissionTable, login: &str, what: Permission, destination: &str) -> bool {
    if table.is_empty() {
        return true;
    }
    let Some(grants) = table.get(login).or_else(|| table.get("*")) else {
        return false;
    };
    grants_allow(grants, login, what, destination)
}

/// Whether one set of grants lets `login` do `what` with `destination`.
pub fn grants_allow(grants: &Grants, login: &str, what: Permission, destination: &str) -> bool {
    let patterns = match what {
        Permission::Read => &grants.read,
        Permission::Write => &grants.write,
        Permission::Configure => &grants.configure,
    };
    patterns.iter().any(|p| {
        if p.contains("{login}") && login.contains('*') {
            // A login cannot widen its own pattern.
            return false;
        }
        glob(
            p.replace("{login}", login).as_bytes(),
            destination.as_bytes(),
        )
    })
}

/// `*` matches any run of bytes, everything else itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> PermissionTable {
        let mut t = PermissionTable::new();
        t.insert(
            "*".into(),
            Grants {
                read: vec!["/topic/chat.*".into(), "/queue/user.{login}.*".into()],
                write: vec!["/topic/chat.*".into()],
                configure: vec![],
            },
        );
        t.insert(
            "admin".into(),
            Grants {
                read: vec!["*".into()],
                write: vec!["*".into()],
                configure: vec!["*".into()],
            },
        );
        t
    }

    #[test]
    fn grants_by_login_with_the_default_and_login_expansion() {
        let t = table();
        assert!(allows(&t, "ana", Permission::Read, "/topic/chat.general"));
        assert!(allows(&t, "ana", Permission::Read, "/queue/user.ana.inbox"));
        assert!(!allows(
            &t,
            "ana",
            Permission::Read,
            "/queue/user.bob.inbox"
        ));
        assert!(!allows(&t, "ana", Permission::Write, "/queue/jobs"));
        assert!(!allows(
            &t,
            "ana",
            Permission::Configure,
            "/topic/chat.general"
        ));
        assert!(allows(&t, "admin", Permission::Configure, "/topic/x"));
        assert!(!allows(&t, "*", Permission::Read, "/queue/user.bob.inbox"));
        assert!(allows(
            &PermissionTable::new(),
            "x",
            Permission::Write,
            "/queue/y"
        ));
    }

    #[test]
    fn bad_patterns_are_named() {
        assert!(validate(&table()).is_ok(), "\"*\" grants everything");
        let mut t = table();
        t.get_mut("*").unwrap().write.push("queue/jobs".into());
        assert!(validate(&t).unwrap_err().contains("queue/jobs"));
        let mut t = table();
        t.get_mut("*").unwrap().read.push("/queue/{user}".into());
        assert!(validate(&t).unwrap_err().contains("placeholder"));
    }
}
