//! Passwords as the config keeps them: argon2id hashes in the PHC string
//! format (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`), never the text.
//! `stompbox passwd` makes one; a plain-text password in the config or on
//! the command line is refused at start.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// OWASP's recommended argon2id parameters: 19 MiB, 2 passes, 1 lane.
fn owasp() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A fresh salt from the operating system's generator.
fn salt() -> Result<SaltString, String> {
    let mut bytes = [0u8; 16];
    getrandom(&mut bytes)?;
    SaltString::encode_b64(&bytes).map_err(|e| e.to_string())
}

/// Reads random bytes from the kernel.
fn getrandom(buf: &mut [u8]) -> Result<(), String> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| format!("no random bytes for a salt: {e}"))
}

/// The PHC string of `password`, hashed with OWASP's parameters.
pub fn hash(password: &str) -> Result<String, String> {
    hash_with(&owasp(), password)
}

fn hash_with(argon: &Argon2<'_>, password: &str) -> Result<String, String> {
    let salt = salt()?;
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// A hash made cheaply (8 KiB, 1 pass): for tests, which log in often.
pub fn hash_for_tests(password: &str) -> String {
    let params = Params::new(8, 1, 1, None).unwrap_or_default();
    hash_with(
        &Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
        password,
    )
    .unwrap_or_default()
}

/// Whether `text` is an argon2 hash in PHC form (what the config must hold).
pub fn check(text: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(text).map_err(|_| {
        "is not an argon2 hash (plain-text passwords are refused): run `stompbox passwd`, type the password, and put the line it prints in its place".to_string()
    })?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(format!(
            "is a {} hash; only argon2 hashes are accepted (make one with `stompbox passwd`)",
            parsed.algorithm
        ));
    }
    Ok(())
}

/// Whether `password` matches `hash` (compared in constant time by argon2).
pub fn verify(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Spends about the time a verification takes, for a login that does
/// not exist, so refusals do not tell which logins do.
pub fn verify_nobody(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash("not a password").unwrap_or_default());
    let _ = verify(dummy, password);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_plain_text_is_refused() {
        let h = hash_for_tests("s3cret");
        assert!(h.starts_with("$argon2id$"));
        assert!(check(&h).is_ok());
        assert!(verify(&h, "s3cret"));
        assert!(!verify(&h, "s3cret "));
        assert!(check("s3cret").unwrap_err().contains("stompbox passwd"));
        assert!(!verify("s3cret", "s3cret"), "a plain text never matches");
        let strong = hash("x").unwrap();
        assert!(strong.contains("m=19456,t=2,p=1"), "{strong}");
    }
}
