//! TLS for both listeners: `stomp+ssl` and `wss`/`https`, from PEM files,
//! with optional client certificates, reloaded on SIGHUP.
//!
//! The certificate in force is one [`TlsAcceptor`] behind a lock: a reload
//! builds a new one and swaps it in, so handshakes after the swap use the
//! new files while connections already open keep the session keys they
//! agreed on (nothing is dropped). A reload whose files do not parse keeps
//! the old certificate and says why.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;

/// The `[tls]` section of the configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM, leaf first.
    pub cert_file: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates (PEM) that client certificates are checked against;
    /// without it no client certificate is asked for.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Refuse TLS clients without a certificate from `client_ca_file`.
    #[serde(default)]
    pub require_client_cert: bool,
    /// A client with a verified certificate logs in as its common name
    /// (CN) when its CONNECT names no other login (RabbitMQ's `ssl_cert_login`).
    #[serde(default)]
    pub cert_login: bool,
    /// Where STOMP over TLS listens (61614 is the port STOMP brokers use).
    #[serde(
        default = "default_stomp_listen",
        deserialize_with = "crate::config::listen_address"
    )]
    pub stomp_listen: SocketAddr,
    /// Where HTTPS (and `wss://…/ws`) listens (15673, RabbitMQ's Web STOMP TLS port).
    #[serde(
        default = "default_https_listen",
        deserialize_with = "crate::config::listen_address"
    )]
    pub https_listen: SocketAddr,
}

fn default_stomp_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 61614))
}

fn default_https_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 15673))
}

impl TlsConfig {
    /// TLS from a certificate and key, with the default listeners.
    pub fn new(cert_file: PathBuf, key_file: PathBuf) -> TlsConfig {
        TlsConfig {
            cert_file,
            key_file,
            client_ca_file: None,
            require_client_cert: false,
            cert_login: false,
            stomp_listen: default_stomp_listen(),
            https_listen: default_https_listen(),
        }
    }
}

/// Why TLS cannot be set up, naming the setting and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds nothing usable.
    #[error("invalid setting tls.{setting}: {path}: {reason}")]
    File {
        /// `cert_file`, `key_file` or `client_ca_file`.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The settings do not fit together.
    #[error("invalid setting tls.{setting}: {reason}")]
    Setting {
        /// The setting.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// rustls refused the certificate and key (they do not match, say).
    #[error("invalid TLS certificate or key ({cert} / {key}): {reason}")]
    Refused {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

fn file_error(setting: &'static str, path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        setting,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Reads every certificate of a PEM file; none is an error.
fn certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = std::fs::read(path).map_err(|e| file_error(setting, path, e))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(setting, path, format!("not PEM certificates ({e})")))?;
    if certs.is_empty() {
        return Err(file_error(
            setting,
            path,
            "no certificate in it (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = std::fs::read(path).map_err(|e| file_error("key_file", path, e))?;
    // The key's bytes are never quoted in an error.
    PrivateKeyDer::from_pem_slice(&text).map_err(|_| {
        file_error(
            "key_file",
            path,
            "no private key in it (expected a PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
        )
    })
}

/// Builds the rustls configuration the files describe.
fn server_config(config: &TlsConfig) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setting {
            setting: "cert_file",
            reason: e.to_string(),
        })?;
    let builder = match &config.client_ca_file {
        None if config.require_client_cert || config.cert_login => {
            return Err(TlsError::Setting {
                setting: if config.cert_login {
                    "cert_login"
                } else {
                    "require_client_cert"
                },
                reason: "needs tls.client_ca_file, the CA that signs client certificates".into(),
            });
        }
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates("client_ca_file", path)? {
                roots
                    .add(cert)
                    .map_err(|e| file_error("client_ca_file", path, e))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
            let verifier = if config.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| file_error("client_ca_file", path, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder
        .with_single_cert(
            certificates("cert_file", &config.cert_file)?,
            private_key(&config.key_file)?,
        )
        .map_err(|e| TlsError::Refused {
            cert: config.cert_file.clone(),
            key: config.key_file.clone(),
            reason: e.to_string(),
        })?;
    // HTTP/1.1 only over the HTTPS listener: WebSockets upgrade from it.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(server)
}

/// The TLS setup in force, swapped whole on reload.
pub struct TlsAcceptors {
    config: TlsConfig,
    acceptor: RwLock<TlsAcceptor>,
}

impl std::fmt::Debug for TlsAcceptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptors")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptors {
    /// Reads the files; an error names the setting and the file.
    pub fn load(config: &TlsConfig) -> Result<Arc<TlsAcceptors>, TlsError> {
        let acceptor = TlsAcceptor::from(Arc::new(server_config(config)?));
        Ok(Arc::new(TlsAcceptors {
            config: config.clone(),
            acceptor: RwLock::new(acceptor),
        }))
    }

    /// Reads the files again and uses them for the handshakes from now
    /// on; on error the certificate in force stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = TlsAcceptor::from(Arc::new(server_config(&self.config)?));
        *self.acceptor.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// Whether a verified client certificate's CN is a login.
    pub fn cert_login(&self) -> bool {
        self.config.cert_login
    }

    fn current(&self) -> TlsAcceptor {
        self.acceptor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The server side of a handshake on an accepted socket, bounded in
    /// time so a client that opens a socket and says nothing holds nothing
    /// for long; with the login its certificate gives, if any.
    pub async fn handshake(
        &self,
        stream: TcpStream,
        within: Duration,
    ) -> io::Result<(TlsStream<TcpStream>, Option<String>)> {
        let accept = self.current().accept(stream);
        let stream = tokio::time::timeout(within, accept)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        let login = if self.config.cert_login {
            stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| common_name(leaf))
        } else {
            None
        };
        Ok((stream, login))
    }
}

/// The first common name (CN) of a certificate's subject.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    let cn = cn.as_str().ok()?;
    // A login is printable text; a CN that is not cannot be one.
    (!cn.is_empty() && !cn.chars().any(char::is_control)).then(|| cn.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    fn self_signed(cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn files_that_do_not_parse_are_named() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = self_signed("broker");
        let good_cert = write(dir.path(), "cert.pem", &cert);
        let good_key = write(dir.path(), "key.pem", &key);
        let junk = write(dir.path(), "junk.pem", "hello\n");
        assert!(TlsAcceptors::load(&TlsConfig::new(good_cert.clone(), good_key.clone())).is_ok());

        let e = TlsAcceptors::load(&TlsConfig::new(junk.clone(), good_key.clone()))
            .expect_err("junk cert")
            .to_string();
        assert!(e.contains("tls.cert_file") && e.contains("junk.pem"), "{e}");
        let e = TlsAcceptors::load(&TlsConfig::new(good_cert.clone(), junk.clone()))
            .expect_err("junk key")
            .to_string();
        assert!(
            e.contains("tls.key_file") && e.contains("no private key"),
            "{e}"
        );
        let missing = dir.path().join("missing.pem");
        let e = TlsAcceptors::load(&TlsConfig::new(missing, good_key.clone()))
            .expect_err("missing")
            .to_string();
        assert!(
            e.contains("tls.cert_file") && e.contains("missing.pem"),
            "{e}"
        );
        // A key that is not the certificate's.
        let (_, other_key) = self_signed("other");
        let other_key = write(dir.path(), "other.pem", &other_key);
        let e = TlsAcceptors::load(&TlsConfig::new(good_cert.clone(), other_key))
            .expect_err("mismatch")
            .to_string();
        assert!(e.contains("invalid TLS certificate or key"), "{e}");
        // The key's text never shows in an error.
        assert!(!e.contains("PRIVATE KEY-----"), "{e}");

        let mut login_without_ca = TlsConfig::new(good_cert, good_key);
        login_without_ca.cert_login = true;
        let e = TlsAcceptors::load(&login_without_ca)
            .expect_err("no CA")
            .to_string();
        assert!(
            e.contains("tls.cert_login") && e.contains("client_ca_file"),
            "{e}"
        );
    }

    #[test]
    fn a_reload_that_fails_keeps_the_certificate_in_force() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = self_signed("broker");
        let cert_path = write(dir.path(), "cert.pem", &cert);
        let key_path = write(dir.path(), "key.pem", &key);
        let acceptors =
            TlsAcceptors::load(&TlsConfig::new(cert_path.clone(), key_path)).expect("load");
        std::fs::write(&cert_path, "broken").expect("overwrite");
        let e = acceptors.reload().expect_err("broken file").to_string();
        assert!(e.contains("cert.pem"), "{e}");
        std::fs::write(&cert_path, cert).expect("restore");
        acceptors.reload().expect("good again");
    }

    #[test]
    fn the_common_name_is_read_from_a_certificate() {
        let (cert, _) = self_signed("alice");
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).expect("der");
        assert_eq!(common_name(&der).as_deref(), Some("alice"));
    }
}
