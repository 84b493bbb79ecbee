//! Tokens for browsers: a JWT given as the CONNECT `passcode` (as
//! RabbitMQ's OAuth2 plugin takes it), signed with HS256 and a shared
//! secret, or RS256/ES256 with a public key or a JWKS file. Its `sub` is
//! the login, its `exp` ends the connection unless a fresh token arrives
//! first (a SEND to `/sys/token`), and an optional `permissions` claim
//! (`{"read": [...], "write": [...], "configure": [...]}`, the patterns of
//! `[permissions]`) replaces the configured permissions for that connection.
//!
//! Signatures are checked by `jsonwebtoken`; the algorithm is taken from
//! the keys configured, never from the token alone, so `alg: none` and a
//! public key used as an HMAC secret are refused.

use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::permissions::{Grants, validate_grants};

/// The `[tokens]` section of the configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A file holding the HS256 secret (at least 32 bytes; a trailing
    /// newline is not part of it). A file, not a value, so the secret is
    /// in neither the config nor the process list.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// A PEM public key: RSA for RS256/RS384/RS512, EC for ES256/ES384.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// A JWKS file (`{"keys": [...]}`), keys picked by the token's `kid`.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// When set, a token's `iss` must be this.
    #[serde(default)]
    pub issuer: Option<String>,
    /// When set, a token's `aud` must include this.
    #[serde(default)]
    pub audience: Option<String>,
}

/// Why the `[tokens]` settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting tokens.{setting}: {reason}")]
pub struct TokenConfigError {
    /// The setting.
    pub setting: &'static str,
    /// Why.
    pub reason: String,
}

/// Why a token gives no access. The messages go to the client: they say
/// what is wrong with the token, never anything about the keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Its `exp` has passed.
    #[error("token expired")]
    Expired,
    /// Not a JWT, or one with an algorithm never accepted.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// No configured key verifies it.
    #[error("token signature does not verify")]
    BadSignature,
    /// Signed right, but its claims do not fit.
    #[error("token refused: {0}")]
    Claims(String),
}

/// A verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// `sub`: the login.
    pub login: String,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: u64,
    /// The `permissions` claim, when it has one.
    pub permissions: Option<Grants>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    permissions: Option<Grants>,
}

/// One key a token may be signed with.
struct Key {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

/// Checks tokens against the configured keys.
pub struct TokenVerifier {
    keys: Vec<Key>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("TokenVerifier")
            .field("keys", &self.keys.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// The shortest HS256 secret taken: RFC 7518 asks for a key at least as
/// long as the hash (256 bits).
const MIN_SECRET: usize = 32;

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, TokenConfigError> {
    std::fs::read(path).map_err(|e| TokenConfigError {
        setting,
        reason: format!("{}: {e}", path.display()),
    })
}

fn jwk_algorithms(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Vec<Algorithm>> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, KeyAlgorithm};
    if let Some(alg) = jwk.common.key_algorithm {
        let alg = match alg {
            KeyAlgorithm::RS256 => Algorithm::RS256,
            KeyAlgorithm::RS384 => Algorithm::RS384,
            KeyAlgorithm::RS512 => Algorithm::RS512,
            KeyAlgorithm::ES256 => Algorithm::ES256,
            KeyAlgorithm::ES384 => Algorithm::ES384,
            KeyAlgorithm::PS256 => Algorithm::PS256,
            KeyAlgorithm::PS384 => Algorithm::PS384,
            KeyAlgorithm::PS512 => Algorithm::PS512,
            KeyAlgorithm::EdDSA => Algorithm::EdDSA,
            // Shared secrets do not belong in a file of public keys.
            _ => return None,
        };
        return Some(vec![alg]);
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(vec![Algorithm::RS256]),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(vec![Algorithm::ES256]),
            EllipticCurve::P384 => Some(vec![Algorithm::ES384]),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(_) => Some(vec![Algorithm::EdDSA]),
        AlgorithmParameters::OctetKey(_) => None,
    }
}

impl TokenVerifier {
    /// Reads the keys; `None` when no key is configured (tokens off).
    pub fn load(config: &TokenConfig) -> Result<Option<TokenVerifier>, TokenConfigError> {
        let mut keys = Vec::new();
        if let Some(path) = &config.secret_file {
            let mut secret = read("secret_file", path)?;
            while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                secret.pop();
            }
            if secret.len() < MIN_SECRET {
                return Err(TokenConfigError {
                    setting: "secret_file",
                    reason: format!(
                        "{}: the secret is {} bytes; HS256 needs at least {MIN_SECRET} (try: head -c 48 /dev/urandom | base64 > {})",
                        path.display(),
                        secret.len(),
                        path.display()
                    ),
                });
            }
            keys.push(Key {
                kid: None,
                algorithms: vec![Algorithm::HS256],
                key: DecodingKey::from_secret(&secret),
            });
        }
        if let Some(path) = &config.public_key_file {
            let pem = read("public_key_file", path)?;
            let key = if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                Key {
                    kid: None,
                    algorithms: vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
                    key,
                }
            } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                Key {
                    kid: None,
                    algorithms: vec![Algorithm::ES256, Algorithm::ES384],
                    key,
                }
            } else {
                return Err(TokenConfigError {
                    setting: "public_key_file",
                    reason: format!(
                        "{}: not a PEM RSA or EC public key (-----BEGIN PUBLIC KEY-----)",
                        path.display()
                    ),
                });
            };
            keys.push(key);
        }
        if let Some(path) = &config.jwks_file {
            let text = read("jwks_file", path)?;
            let set: jsonwebtoken::jwk::JwkSet =
                serde_json::from_slice(&text).map_err(|e| TokenConfigError {
                    setting: "jwks_file",
                    reason: format!("{}: not a JWKS document ({e})", path.display()),
                })?;
            let before = keys.len();
            for jwk in &set.keys {
                let (Some(algorithms), Ok(key)) = (jwk_algorithms(jwk), DecodingKey::from_jwk(jwk))
                else {
                    continue;
                };
                keys.push(Key {
                    kid: jwk.common.key_id.clone(),
                    algorithms,
                    key,
                });
            }
            if keys.len() == before {
                return Err(TokenConfigError {
                    setting: "jwks_file",
                    reason: format!(
                        "{}: no usable public key in it (RSA, EC P-256/P-384 or Ed25519)",
                        path.display()
                    ),
                });
            }
        }
        if keys.is_empty() {
            if config.issuer.is_some() || config.audience.is_some() {
                return Err(TokenConfigError {
                    setting: "secret_file",
                    reason: "issuer or audience is set, but no key: set secret_file, public_key_file or jwks_file".into(),
                });
            }
            return Ok(None);
        }
        Ok(Some(TokenVerifier {
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        }))
    }

    /// Whether a passcode has a JWT's shape (three base64url parts, a
    /// JSON header): only those are checked as tokens, so a user's
    /// password is never mistaken for one.
    pub fn looks_like_token(passcode: &str) -> bool {
        passcode.starts_with("eyJ")
            && passcode.bytes().filter(|b| *b == b'.').count() == 2
            && passcode
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
    }

    /// Verifies a token's signature and claims (`exp` and `sub` required).
    pub fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let token = token.trim();
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            TokenError::Malformed(
                "not a signed JWT (header.payload.signature, with alg HS256, RS256, ES256 or kin; alg none is never accepted)".into(),
            )
        })?;
        let candidates = self.keys.iter().filter(|k| {
            k.algorithms.contains(&header.alg)
                && match (&k.kid, &header.kid) {
                    (Some(want), Some(got)) => want == got,
                    _ => true,
                }
        });
        let mut last = TokenError::Malformed(format!(
            "algorithm {:?} is not one the configured keys use",
            header.alg
        ));
        for key in candidates {
            let mut validation = Validation::new(header.alg);
            validation.leeway = 0;
            validation.set_required_spec_claims(&["exp", "sub"]);
            if let Some(issuer) = &self.issuer {
                validation.set_issuer(&[issuer]);
            }
            match &self.audience {
                Some(audience) => validation.set_audience(&[audience]),
                None => validation.validate_aud = false,
            }
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return claims(data.claims),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    last = match e.kind() {
                        ErrorKind::InvalidSignature => TokenError::BadSignature,
                        ErrorKind::ExpiredSignature => return Err(TokenError::Expired),
                        ErrorKind::ImmatureSignature => {
                            return Err(TokenError::Claims("not valid yet (nbf)".into()));
                        }
                        ErrorKind::InvalidIssuer => {
                            return Err(TokenError::Claims("wrong issuer (iss)".into()));
                        }
                        ErrorKind::InvalidAudience => {
                            return Err(TokenError::Claims("wrong audience (aud)".into()));
                        }
                        ErrorKind::MissingRequiredClaim(claim) => {
                            return Err(TokenError::Claims(format!("no {claim} claim")));
                        }
                        ErrorKind::Json(_) => {
                            return Err(TokenError::Claims(
                                "claims not understood (sub must be a string, exp a number, permissions an object of read, write and configure lists)".into(),
                            ));
                        }
                        _ => TokenError::BadSignature,
                    };
                }
            }
        }
        Err(last)
    }
}

fn claims(claims: Claims) -> Result<VerifiedToken, TokenError> {
    if claims.sub.is_empty() || claims.sub.chars().any(char::is_control) {
        return Err(TokenError::Claims("sub must be a printable login".into()));
    }
    if let Some(grants) = &claims.permissions {
        validate_grants(&claims.sub, grants)
            .map_err(|e| TokenError::Claims(format!("permissions claim: {e}")))?;
    }
    Ok(VerifiedToken {
        login: claims.sub,
        expires_at: claims.exp,
        permissions: claims.permissions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn verifier(dir: &Path) -> TokenVerifier {
        let path = dir.join("secret");
        std::fs::write(&path, format!("{SECRET}\n")).expect("write");
        TokenVerifier::load(&TokenConfig {
            secret_file: Some(path),
            ..TokenConfig::default()
        })
        .expect("load")
        .expect("keys")
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("encode")
    }

    #[test]
    fn a_valid_token_gives_its_subject_and_expiry() {
        let dir = tempfile::tempdir().expect("dir");
        let v = verifier(dir.path());
        let exp = now() + 60;
        let t = token(serde_json::json!({"sub": "alice", "exp": exp}), SECRET);
        assert!(TokenVerifier::looks_like_token(&t));
        let got = v.verify(&t).expect("valid");
        assert_eq!(got.login, "alice");
        assert_eq!(got.expires_at, exp);
        assert_eq!(got.permissions, None);
    }

    #[test]
    fn expired_forged_unsigned_and_malformed_tokens_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let v = verifier(dir.path());
        let expired = token(
            serde_json::json!({"sub": "alice", "exp": now() - 5}),
            SECRET,
        );
        assert_eq!(v.verify(&expired), Err(TokenError::Expired));
        let forged = token(
            serde_json::json!({"sub": "alice", "exp": now() + 60}),
            "another-secret-another-secret-another-secret",
        );
        assert_eq!(v.verify(&forged), Err(TokenError::BadSignature));
        // alg none: a header and claims with an empty signature.
        let none =
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert!(matches!(v.verify(none), Err(TokenError::Malformed(_))));
        assert!(matches!(
            v.verify("not.a.token"),
            Err(TokenError::Malformed(_))
        ));
        let no_sub = token(serde_json::json!({"exp": now() + 60}), SECRET);
        assert!(matches!(v.verify(&no_sub), Err(TokenError::Claims(m)) if m.contains("sub")));
        let no_exp = token(serde_json::json!({"sub": "alice"}), SECRET);
        assert!(matches!(v.verify(&no_exp), Err(TokenError::Claims(m)) if m.contains("exp")));
        assert!(!TokenVerifier::looks_like_token("hunter2"));
    }

    #[test]
    fn a_permissions_claim_is_read_and_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let v = verifier(dir.path());
        let t = token(
            serde_json::json!({"sub": "bob", "exp": now() + 60,
                "permissions": {"read": ["/topic/chat.*"], "write": []}}),
            SECRET,
        );
        let got = v.verify(&t).expect("valid");
        assert_eq!(
            got.permissions.expect("claim").read,
            vec!["/topic/chat.*".to_string()]
        );
        let bad = token(
            serde_json::json!({"sub": "bob", "exp": now() + 60,
                "permissions": {"read": ["chat"]}}),
            SECRET,
        );
        assert!(matches!(v.verify(&bad), Err(TokenError::Claims(m)) if m.contains("permissions")));
    }

    #[test]
    fn bad_settings_are_named() {
        let dir = tempfile::tempdir().expect("dir");
        let short = dir.path().join("short");
        std::fs::write(&short, "tiny").expect("write");
        let e = TokenVerifier::load(&TokenConfig {
            secret_file: Some(short),
            ..TokenConfig::default()
        })
        .expect_err("short");
        assert_eq!(e.setting, "secret_file");
        // The secret itself is never quoted.
        assert!(!e.to_string().contains("tiny"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "junk").expect("write");
        let e = TokenVerifier::load(&TokenConfig {
            public_key_file: Some(junk.clone()),
            ..TokenConfig::default()
        })
        .expect_err("junk key");
        assert_eq!(e.setting, "public_key_file");
        let e = TokenVerifier::load(&TokenConfig {
            jwks_file: Some(junk),
            ..TokenConfig::default()
        })
        .expect_err("junk jwks");
        assert_eq!(e.setting, "jwks_file");
        assert!(
            TokenVerifier::load(&TokenConfig::default())
                .expect("no keys")
                .is_none()
        );
    }

    /// base64url without padding, for a JWK's coordinates.
    fn b64url(bytes: &[u8]) -> String {
        const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn es256_tokens_verify_with_a_public_key_file_and_a_jwks_file() {
        let dir = tempfile::tempdir().expect("dir");
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let signing =
            EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("signing key");
        let sign = |kid: Option<&str>| {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = kid.map(str::to_string);
            encode(
                &header,
                &serde_json::json!({"sub": "carol", "exp": now() + 60}),
                &signing,
            )
            .expect("encode")
        };
        let pem = dir.path().join("pub.pem");
        std::fs::write(&pem, pair.public_key_pem()).expect("write");
        let by_pem = TokenVerifier::load(&TokenConfig {
            public_key_file: Some(pem),
            ..TokenConfig::default()
        })
        .expect("load")
        .expect("keys");
        assert_eq!(by_pem.verify(&sign(None)).expect("valid").login, "carol");

        let raw = pair.public_key_raw();
        assert_eq!(raw.len(), 65, "an uncompressed P-256 point");
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",
            "x": b64url(&raw[1..33]), "y": b64url(&raw[33..]),
        }]});
        let jwks_path = dir.path().join("jwks.json");
        std::fs::write(&jwks_path, jwks.to_string()).expect("write");
        let by_jwks = TokenVerifier::load(&TokenConfig {
            jwks_file: Some(jwks_path),
            ..TokenConfig::default()
        })
        .expect("load")
        .expect("keys");
        assert_eq!(
            by_jwks.verify(&sign(Some("k1"))).expect("valid").login,
            "carol"
        );
        // A kid the set does not have: no key to check it with.
        assert!(by_jwks.verify(&sign(Some("k2"))).is_err());
        // An HS256 token made with the public key as the secret (the
        // classic confusion attack) does not verify.
        let confused = token(
            serde_json::json!({"sub": "carol", "exp": now() + 60}),
            &pair.public_key_pem(),
        );
        assert!(by_pem.verify(&confused).is_err());
    }

    #[test]
    fn rs256_tokens_verify_with_an_rsa_public_key() {
        let dir = tempfile::tempdir().expect("dir");
        let public = dir.path().join("rsa.pub.pem");
        std::fs::write(&public, include_str!("testdata/rsa-public.pem")).expect("write");
        let v = TokenVerifier::load(&TokenConfig {
            public_key_file: Some(public),
            ..TokenConfig::default()
        })
        .expect("load")
        .expect("keys");
        let signing =
            EncodingKey::from_rsa_pem(include_bytes!("testdata/rsa-private.pem")).expect("key");
        let t = encode(
            &Header::new(Algorithm::RS256),
            &serde_json::json!({"sub": "dora", "exp": now() + 60}),
            &signing,
        )
        .expect("encode");
        assert_eq!(v.verify(&t).expect("valid").login, "dora");
        // HS256 with the public key's text as the secret: refused.
        let confused = token(
            serde_json::json!({"sub": "dora", "exp": now() + 60}),
            include_str!("testdata/rsa-public.pem"),
        );
        assert!(v.verify(&confused).is_err());
    }
}
