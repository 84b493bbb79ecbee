//! TLS: STOMP over TLS and secure WebSocket with a CA made in the test,
//! mutual TLS with the certificate's common name as the login, and a
//! certificate reloaded without dropping open connections.

use std::net::SocketAddr;
use std::path::Path;

use integration_tests::tls::{self, TestCa};
use integration_tests::{Client, TestServer, frame};
use stomp_codec::Command;
use stompbox::config::Config;
use stompbox::session::AnonymousAccess;
use stompbox::transport::tls::TlsConfig;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// TLS on ephemeral ports with `ca`'s server certificate written to `dir`.
fn with_tls(config: &mut Config, ca: &TestCa, dir: &Path) -> TlsConfig {
    let (cert, key) = ca.server().write(dir, "server");
    let mut tls = TlsConfig::new(cert, key);
    tls.stomp_listen = loopback();
    tls.https_listen = loopback();
    config.tls = Some(tls.clone());
    tls
}

async fn round_trip(a: &mut Client, b: &mut Client, topic: &str) -> stomp_codec::Frame {
    b.subscribe(topic, topic, "auto", &[]).await;
    a.send_confirmed(
        frame(Command::Send, &[("destination", topic)]).body("over tls"),
        "sent",
    )
    .await;
    let got = b.messages(1).await.remove(0);
    assert_eq!(integration_tests::body(&got), "over tls");
    got
}

#[tokio::test]
async fn stomp_over_tls_and_secure_websocket_carry_messages() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new("test CA");
    let server = TestServer::start(|c| {
        with_tls(c, &ca, dir.path());
    })
    .await;
    let tls_addr = server.server().tls_addr().expect("a TLS listener");
    let https_addr = server.server().https_addr().expect("an HTTPS listener");

    let mut over_tls = Client::tls(tls_addr, ca.client_config(None)).await;
    over_tls.connect(&[]).await;
    let mut over_wss = Client::wss(https_addr, ca.client_config(None)).await;
    over_wss.connect(&[]).await;
    round_trip(&mut over_wss, &mut over_tls, "/topic/secure").await;
    round_trip(&mut over_tls, &mut over_wss, "/topic/secure2").await;
    // Plain listeners go on as before, next to the TLS ones.
    let mut plain = server.client(integration_tests::Via::Tcp).await;
    round_trip(&mut over_tls, &mut plain, "/topic/mixed").await;

    // A client that does not trust the broker's certificate gets no connection.
    let stranger = TestCa::new("another CA");
    let refused = tls::connect(tls_addr, stranger.client_config(None)).await;
    assert!(
        refused.is_err(),
        "a certificate from an unknown CA was accepted"
    );
    // Plain STOMP on the TLS port: no handshake, no session, and the broker goes on.
    let mut plain_on_tls = Client::tcp(tls_addr).await;
    plain_on_tls
        .send(frame(Command::Connect, &[("accept-version", "1.2")]))
        .await;
    plain_on_tls.expect_closed().await;
    round_trip(&mut over_tls, &mut over_wss, "/topic/still").await;
    server.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_logs_in_as_the_certificate_common_name() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new("test CA");
    let server = TestServer::start(|c| {
        let mut tls = with_tls(c, &ca, dir.path());
        tls.client_ca_file = Some(ca.write(dir.path(), "clients"));
        tls.require_client_cert = true;
        tls.cert_login = true;
        c.tls = Some(tls);
        // Nobody gets in without credentials: the certificate is one.
        c.anonymous = AnonymousAccess::Never;
    })
    .await;
    let tls_addr = server.server().tls_addr().expect("TLS");
    let https_addr = server.server().https_addr().expect("HTTPS");
    let alice = ca.issue("alice", &["alice.example"]);

    let mut a = Client::tls(tls_addr, ca.client_config(Some(&alice))).await;
    a.connect(&[]).await;
    let mut b = Client::wss(https_addr, ca.client_config(Some(&alice))).await;
    b.connect(&[]).await;
    let got = round_trip(&mut a, &mut b, "/topic/signed").await;
    assert_eq!(got.headers.get("x-sender"), Some("alice"), "{got:?}");

    // Another login than the certificate's needs that login's password.
    let mut other = Client::tls(tls_addr, ca.client_config(Some(&alice))).await;
    other
        .send(frame(
            Command::Connect,
            &[
                ("accept-version", "1.2"),
                ("login", "root"),
                ("passcode", "x"),
            ],
        ))
        .await;
    let e = other.expect_error_and_close().await;
    assert!(
        e.headers
            .get("message")
            .unwrap_or_default()
            .contains("access refused"),
        "{e:?}"
    );

    // Without a certificate, or with one from another CA: no session.
    let stranger = TestCa::new("another CA").issue("alice", &["alice.example"]);
    // (The second trusts the broker and presents a certificate the broker does not trust.)
    for config in [ca.client_config(None), ca.client_config(Some(&stranger))] {
        // With TLS 1.3 the client may finish its side of the handshake
        // before the broker refuses its certificate: either way, no CONNECTED.
        if let Ok(stream) = tls::connect(tls_addr, config).await {
            let mut c = Client::from_stream(Box::new(stream));
            c.send(frame(Command::Connect, &[("accept-version", "1.2")]))
                .await;
            c.expect_closed().await;
        }
    }
    round_trip(&mut b, &mut a, "/topic/still-signed").await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_reloaded_certificate_serves_new_connections_and_open_ones_go_on() {
    let dir = tempfile::tempdir().expect("dir");
    let old_ca = TestCa::new("old CA");
    let tls_config = std::sync::Mutex::new(None);
    let server = TestServer::start(|c| {
        *tls_config.lock().expect("lock") = Some(with_tls(c, &old_ca, dir.path()));
    })
    .await;
    let tls_config = tls_config.into_inner().expect("lock").expect("set");
    let tls_addr = server.server().tls_addr().expect("TLS");
    let mut open = Client::tls(tls_addr, old_ca.client_config(None)).await;
    open.connect(&[]).await;

    // The files are replaced by a certificate from a new CA, then reloaded.
    let new_ca = TestCa::new("new CA");
    let renewed = new_ca.server();
    std::fs::write(&tls_config.cert_file, &renewed.cert).expect("write");
    std::fs::write(&tls_config.key_file, &renewed.key).expect("write");
    server.server().reload_tls().expect("reload");

    let mut fresh = Client::tls(tls_addr, new_ca.client_config(None)).await;
    fresh.connect(&[]).await;
    assert!(
        tls::connect(tls_addr, old_ca.client_config(None))
            .await
            .is_err(),
        "the old certificate is still served"
    );
    // The connection opened before the reload still works both ways.
    round_trip(&mut open, &mut fresh, "/topic/renewed").await;
    round_trip(&mut fresh, &mut open, "/topic/renewed2").await;

    // A reload of files that do not parse keeps the certificate in force.
    std::fs::write(&tls_config.cert_file, "not a certificate").expect("write");
    let e = server.server().reload_tls().expect_err("broken files");
    assert!(e.to_string().contains("tls.cert_file"), "{e}");
    let mut after = Client::tls(tls_addr, new_ca.client_config(None)).await;
    after.connect(&[]).await;
    server.shutdown().await;
}
