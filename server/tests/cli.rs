//! The binary's edge: help, configuration precedence, clear errors.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_stompbox");
const WAIT: Duration = Duration::from_secs(10);

/// Starts the broker and returns it with its TCP port, read from the log.
fn start(args: &[&str], env: &[(&str, &str)]) -> (Running, u16) {
    start_command(Command::new(BIN), args, env)
}

/// Like [`start`], with `cmd` running the broker (under `prlimit`, say).
fn start_command(mut cmd: Command, args: &[&str], env: &[(&str, &str)]) -> (Running, u16) {
    cmd.args([
        "--tcp-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ])
    .args(args)
    .env_remove("STOMPBOX_HEART_BEAT")
    .env_remove("STOMPBOX_DATA_DIR")
    .stderr(Stdio::piped())
    .stdout(Stdio::null());
    // Each broker its own journal, removed with the guard.
    let data = tempfile::tempdir().expect("a data directory");
    if !args.contains(&"--data-dir") {
        cmd.arg("--data-dir").arg(data.path());
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = Running(cmd.spawn().expect("binary starts"), data);
    let stderr = child.0.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("tcp_addr=127.0.0.1:").nth(1) {
                let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                let _ = tx.send(port.parse::<u16>().expect("a port"));
            }
        }
    });
    let port = rx
        .recv_timeout(WAIT)
        .expect("the broker logs its TCP address");
    (child, port)
}

fn connected_frame(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    first_reply(&mut s)
}

/// Sends CONNECT and reads the frame that answers it.
fn first_reply(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(b"CONNECT\naccept-version:1.2\n\n\0")
        .expect("write");
    read_frame(s)
}

/// Reads up to and including the next NUL (or the end of the stream).
fn read_frame(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\0") {
        if s.read(&mut byte).expect("read") == 0 {
            break;
        }
        out.push(byte[0]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A started broker and its data directory; killed if a test fails before
/// [`stop`]ping it, so a failing test leaves no process behind, and the
/// directory removed with it.
struct Running(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Running {
    fn drop(&mut self) {
        // Ok and no signal if stop() already reaped it.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stop(mut child: Running) {
    // SIGTERM through the standard `kill`, so the graceful path is what runs.
    let status = Command::new("kill")
        .arg(child.0.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            assert!(status.success(), "graceful shutdown exits 0, got {status}");
            return;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn help_documents_the_options() {
    let out = Command::new(BIN).arg("--help").output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for flag in [
        "--tcp-listen",
        "--http-listen",
        "--config",
        "--heart-beat",
        "--max-frame-size",
        "--slow-consumer",
        "--user",
        "--max-connections",
        "--max-connections-per-ip",
        "--memory-limit",
        "--frame-timeout-ms",
        "--min-heart-beat-ms",
        "--max-transaction-bytes",
        "--data-dir",
        "--in-memory",
        "--journal-max-bytes",
        "--journal-segment-bytes",
        "--allowed-origin",
        "--trusted-proxy",
        "--tls-cert",
        "--tls-key",
        "--tls-client-ca",
        "--tls-cert-login",
        "--tls-listen",
        "--https-listen",
        "--token-secret-file",
        "--token-public-key-file",
        "--token-jwks-file",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn file_then_environment_then_flags() {
    let dir = std::env::temp_dir().join(format!("stompbox-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("stompbox.toml");
    std::fs::write(&file, "heart_beat = \"1111,1111\"\nmax_headers = 50\n").expect("write config");
    let file = file.to_string_lossy().into_owned();

    let (child, port) = start(&["--config", &file], &[]);
    assert!(connected_frame(port).contains("heart-beat:1111,1111"));
    stop(child);

    let (child, port) = start(
        &["--config", &file],
        &[("STOMPBOX_HEART_BEAT", "2222,2222")],
    );
    assert!(connected_frame(port).contains("heart-beat:2222,2222"));
    stop(child);

    let (child, port) = start(
        &["--config", &file, "--heart-beat", "3333,3333"],
        &[("STOMPBOX_HEART_BEAT", "2222,2222")],
    );
    assert!(connected_frame(port).contains("heart-beat:3333,3333"));
    stop(child);
}

#[test]
fn bad_configuration_is_named() {
    let out = Command::new(BIN)
        .args([
            "--heart-beat",
            "often",
            "--tcp-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid setting heart_beat"));

    let dir = std::env::temp_dir().join(format!("stompbox-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "max_frame_sise = 10\n").expect("write config");
    let out = Command::new(BIN)
        .args(["--config", &file.to_string_lossy()])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid config file") && err.contains("max_frame_sise"),
        "{err}"
    );

    // A queue policy's window that is not a byte count.
    std::fs::write(
        &file,
        "[[queues]]\npattern = \"/queue/x\"\nmemory_window_bytes = -1\n",
    )
    .expect("write config");
    let out = Command::new(BIN)
        .args(["--config", &file.to_string_lossy()])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid config file") && err.contains("memory_window_bytes"),
        "{err}"
    );

    // Exchanges and queue policies that cannot work: named, nothing starts.
    for (text, named) in [
        (
            "[[exchanges]]\nname = \"a\"\ntype = \"topic\"\nbindings = [{ exchange = \"b\", key = \"#\" }]\n\
             [[exchanges]]\nname = \"b\"\ntype = \"fanout\"\nbindings = [{ exchange = \"a\" }]\n",
            "loop: a → b → a",
        ),
        (
            "[[exchanges]]\nname = \"a\"\ntype = \"round-robin\"\n",
            "round-robin",
        ),
        (
            "[[exchanges]]\nname = \"a\"\ntype = \"direct\"\nbindings = [{ exchange = \"missing\" }]\n",
            "no exchange \"missing\"",
        ),
        (
            "[[exchanges]]\nname = \"a\"\ntype = \"topic\"\nbindings = [{ queue = \"/queue/q\", key = \"a..b\" }]\n",
            "empty segment",
        ),
        (
            "[[queues]]\npattern = \"/queue/x\"\ndead_letter = \"/topic/dead\"\n",
            "dead_letter",
        ),
        (
            "[permissions.ana]\nwrite = [\"queue/jobs\"]\n",
            "invalid setting permissions",
        ),
        (
            "[[queues]]\npattern = \"/queue/x\"\nack_timeout_ms = 90000000\n",
            "ack_timeout_ms",
        ),
        (
            "chat_token_url = \"javascript:alert(1)\"\n",
            "invalid setting chat_token_url",
        ),
        (
            "[[queues]]\npattern = \"/queue/x\"\ndedup_window_ids = 2000000\n",
            "dedup_window_ids",
        ),
        (
            "[[queues]]\npattern = \"/queue/x\"\nmax_deliveries = -1\n",
            "max_deliveries",
        ),
        ("trusted_proxies = [\"proxy.example\"]\n", "trusted_proxies"),
    ] {
        std::fs::write(&file, text).expect("write config");
        let out = Command::new(BIN)
            .args(["--config", &file.to_string_lossy()])
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{text} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{text}: {err}");
    }

    for (flag, value, named) in [
        ("--memory-limit", "lots", "memory_limit"),
        ("--memory-limit", "140%", "memory_limit"),
        ("--memory-limit", "10", "memory_limit"),
        ("--frame-timeout-ms", "0", "frame_timeout_ms"),
        ("--min-heart-beat-ms", "0", "min_heart_beat_ms"),
        ("--max-connections-per-ip", "0", "max_connections_per_ip"),
        ("--max-transaction-bytes", "0", "max_transaction_bytes"),
        ("--journal-max-bytes", "10%", "journal_max_bytes"),
        ("--journal-max-bytes", "plenty", "journal_max_bytes"),
        ("--journal-max-bytes", "1MiB", "journal_max_bytes"),
        ("--journal-segment-bytes", "1KiB", "journal_segment_bytes"),
        ("--allowed-origin", "chat.example.com", "allowed_origins"),
    ] {
        let out = Command::new(BIN)
            .args([
                flag,
                value,
                "--tcp-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{flag} {value} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("invalid setting {named}")),
            "{flag} {value}: {err}"
        );
    }

    let out = Command::new(BIN)
        .args(["--user", "nopasscode"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected login:HASH"));

    // A password in plain text, on the command line or in the file: refused,
    // and never echoed back.
    let out = Command::new(BIN)
        .args(["--user", "carol:topsecret"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stompbox passwd") && !err.contains("topsecret"),
        "{err}"
    );
    std::fs::write(&file, "[users]\nana = \"s3cret\"\n").expect("write config");
    let out = Command::new(BIN)
        .args(["--config", &file.to_string_lossy()])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid setting users")
            && err.contains("stompbox passwd")
            && !err.contains("s3cret"),
        "{err}"
    );
}

#[test]
fn port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let data = tempfile::tempdir().expect("a data directory");
    let out = Command::new(BIN)
        .args(["--tcp-listen", &addr, "--http-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

#[test]
fn connections_fill_the_open_file_limit_then_are_refused_with_an_error() {
    // A soft limit of 64 under a hard limit of 160: the broker raises its
    // soft limit to 160 and keeps a reserve of 32 descriptors, so it holds
    // 128 connections. Had it not raised the limit, it would hold 32.
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=64:160", BIN]);
    // All from one address: its share (half, by default) would stop them at 64.
    let (child, port) = start_command(cmd, &["--max-connections-per-ip", "1000"], &[]);
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..130 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let reply = first_reply(&mut s);
        if reply.starts_with("CONNECTED") {
            held.push(s);
        } else {
            refused.push(reply);
        }
    }
    assert_eq!(
        held.len(),
        128,
        "{} refused, the first with {:?}",
        refused.len(),
        refused.first()
    );
    assert_eq!(refused.len(), 2);
    for reply in &refused {
        assert!(
            reply.starts_with("ERROR") && reply.contains("message:server full"),
            "{reply}"
        );
    }
    // Everyone held is still served: each gets a RECEIPT.
    for (i, s) in held.iter_mut().enumerate() {
        s.write_all(format!("SEND\ndestination:/queue/held\nreceipt:{i}\n\nhi\0").as_bytes())
            .expect("write");
    }
    for (i, s) in held.iter_mut().enumerate() {
        let text = read_frame(s);
        assert!(
            text.trim_start_matches('\n').starts_with("RECEIPT")
                && text.contains(&format!("receipt-id:{i}\n")),
            "{text}"
        );
    }
    drop(held);
    stop(child);
}

#[test]
fn two_brokers_never_share_a_data_directory() {
    let data = tempfile::tempdir().expect("a data directory");
    let dir = data.path().to_string_lossy().to_string();
    let (first, _port) = start(&["--data-dir", &dir], &[]);
    let out = Command::new(BIN)
        .args([
            "--tcp-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
            &dir,
        ])
        .output()
        .expect("runs");
    assert!(
        !out.status.success(),
        "a second broker opened the same journal"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in use by another stompbox process") && err.contains(&dir),
        "{err}"
    );
    stop(first);
}

#[test]
fn an_unusable_data_directory_is_named() {
    let data = tempfile::tempdir().expect("a data directory");
    // A file where the directory should be.
    let file = data.path().join("not-a-dir");
    std::fs::write(&file, "x").expect("write");
    let out = Command::new(BIN)
        .args([
            "--tcp-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&file)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("journal directory") && err.contains("not-a-dir"),
        "{err}"
    );
}

#[test]
fn passwd_hashes_a_password_that_then_logs_in() {
    let mut child = Command::new(BIN)
        .arg("passwd")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(b"correct horse\n")
        .expect("write");
    let out = child.wait_with_output().expect("exits");
    assert!(out.status.success());
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert!(!hash.contains("correct horse"));

    let user = format!("ana:{hash}");
    let (broker, port) = start(&["--user", &user, "--anonymous", "never"], &[]);
    let login = |passcode: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        s.write_all(
            format!("CONNECT\naccept-version:1.2\nlogin:ana\npasscode:{passcode}\n\n\0").as_bytes(),
        )
        .expect("write");
        read_frame(&mut s)
    };
    assert!(login("correct horse").starts_with("CONNECTED"));
    assert!(login("wrong").starts_with("ERROR"));
    stop(broker);
}

/// A certificate for localhost signed by a CA of its own: (CA PEM, cert PEM, key PEM).
fn certificate() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).expect("CA").pem();
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let cert = leaf
        .signed_by(&key, &rcgen::Issuer::from_params(&ca, &ca_key))
        .expect("signed");
    (ca_pem, cert.pem(), key.serialize_pem())
}

/// CONNECT over TLS to `port`, trusting `ca`; the reply, or the TLS error.
fn tls_connect(
    port: u16,
    ca: &str,
) -> std::io::Result<(
    tokio_rustls::rustls::StreamOwned<tokio_rustls::rustls::ClientConnection, TcpStream>,
    String,
)> {
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).expect("CA"))
        .expect("root");
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let tls = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
        .map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(WAIT))?;
    let mut stream = rustls::StreamOwned::new(tls, tcp);
    stream.write_all(b"CONNECT\naccept-version:1.2\n\n\0")?;
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\0") {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        out.push(byte[0]);
    }
    Ok((stream, String::from_utf8_lossy(&out).into_owned()))
}

#[test]
fn sighup_reloads_the_tls_certificate_without_dropping_connections() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (old_ca, old_cert, old_key) = certificate();
    std::fs::write(&cert, old_cert).expect("write");
    std::fs::write(&key, old_key).expect("write");
    let (child, lines) = spawn_logged(&[
        "--tls-listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--https-listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
    ]);
    let wait_for = |what: &str| -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("the broker logs {what:?}"));
            if line.contains(what) {
                return line;
            }
        }
    };
    let line = wait_for("stomp_addr=127.0.0.1:");
    let port: u16 = line
        .split("stomp_addr=127.0.0.1:")
        .nth(1)
        .expect("port")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a port");
    let (mut open, reply) = tls_connect(port, &old_ca).expect("TLS with the first certificate");
    assert!(reply.starts_with("CONNECTED"), "{reply}");

    let (new_ca, new_cert, new_key) = certificate();
    std::fs::write(&cert, new_cert).expect("write");
    std::fs::write(&key, new_key).expect("write");
    let status = Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    wait_for("TLS certificate and key read again");

    let (_, reply) = tls_connect(port, &new_ca).expect("TLS with the new certificate");
    assert!(reply.starts_with("CONNECTED"), "{reply}");
    assert!(
        tls_connect(port, &old_ca).is_err(),
        "the old certificate is still served"
    );
    // The connection made before the reload is still served.
    open.write_all(b"SUBSCRIBE\nid:1\ndestination:/topic/x\nreceipt:r\n\n\0")
        .expect("write");
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\0") && open.read(&mut byte).expect("read") > 0 {
        out.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&out).starts_with("RECEIPT"));
    stop(child);
}

#[test]
fn unusable_tls_and_token_settings_are_named() {
    let dir = tempfile::tempdir().expect("dir");
    let missing = dir.path().join("missing.pem");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "junk").expect("write");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(BIN)
            .args([
                "--tcp-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--in-memory",
            ])
            .args(args)
            .output()
            .expect("runs");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&[
        "--tls-cert".as_ref(),
        missing.as_os_str(),
        "--tls-key".as_ref(),
        junk.as_os_str(),
    ]);
    assert!(
        err.contains("tls.cert_file") && err.contains("missing.pem"),
        "{err}"
    );
    let (_, cert, _) = certificate();
    let cert_path = dir.path().join("cert.pem");
    std::fs::write(&cert_path, cert).expect("write");
    let err = run(&[
        "--tls-cert".as_ref(),
        cert_path.as_os_str(),
        "--tls-key".as_ref(),
        junk.as_os_str(),
    ]);
    assert!(
        err.contains("tls.key_file") && err.contains("no private key"),
        "{err}"
    );
    let err = run(&["--tls-client-ca".as_ref(), junk.as_os_str()]);
    assert!(err.contains("--tls-cert"), "{err}");
    let err = run(&["--token-secret-file".as_ref(), junk.as_os_str()]);
    assert!(
        err.contains("tokens.secret_file") && !err.contains("junk\n"),
        "{err}"
    );
    let err = run(&["--token-public-key-file".as_ref(), junk.as_os_str()]);
    assert!(err.contains("tokens.public_key_file"), "{err}");
}

#[test]
fn send_and_subscribe_round_trip_and_fail_in_one_line() {
    let (child, port) = start(&[], &[]);
    let url = format!("stomp://127.0.0.1:{port}");
    // Queued first, received after: the queue holds it.
    let out = Command::new(BIN)
        .args([
            "send",
            "/queue/cli",
            "hello from the command line",
            "--url",
            &url,
        ])
        .args(["-H", "x-tag:7", "-n", "2"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("2 messages sent and confirmed to /queue/cli"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args([
            "subscribe",
            "/queue/cli",
            "--url",
            &url,
            "-n",
            "1",
            "--idle-timeout",
            "10",
        ])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from the command line\n"
    );
    let out = Command::new(BIN)
        .args([
            "subscribe",
            "/queue/cli",
            "--url",
            &url,
            "-n",
            "1",
            "--json",
        ])
        .args(["--ack", "client-individual", "--idle-timeout", "10"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.contains(r#""body":"hello from the command line""#),
        "{line}"
    );
    assert!(line.contains(r#""x-tag":"7""#), "{line}");
    // A body from standard input.
    let mut send = Command::new(BIN)
        .args(["send", "/queue/cli-stdin", "-", "--url", &url])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    send.stdin
        .take()
        .expect("stdin")
        .write_all(b"piped body")
        .expect("write");
    assert!(send.wait().expect("exits").success());
    let out = Command::new(BIN)
        .args([
            "subscribe",
            "/queue/cli-stdin",
            "--url",
            &url,
            "-n",
            "1",
            "--idle-timeout",
            "10",
        ])
        .output()
        .expect("runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped body\n");

    // Failures: one line, non-zero exit, no backtrace.
    let fails = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().expect("runs");
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.starts_with("stompbox: error:"), "{err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
        err
    };
    let err = fails(&["send", "/nowhere/x", "body", "--url", &url]);
    assert!(err.contains("destination"), "{err}");
    let err = fails(&["send", "/queue/x", "body", "--url", "stomp://127.0.0.1:1"]);
    assert!(err.contains("127.0.0.1:1"), "{err}");
    let err = fails(&["send", "/queue/x", "-H", "nocolon", "--url", &url]);
    assert!(err.contains("name:value"), "{err}");
    let err = fails(&[
        "subscribe",
        "/queue/silent",
        "--url",
        &url,
        "--idle-timeout",
        "1",
    ]);
    assert!(err.contains("nothing arrived"), "{err}");
    stop(child);
}

#[test]
fn a_broker_nobody_could_use_is_refused_and_the_banner_says_what_runs() {
    let out = Command::new(BIN)
        .args(["--anonymous", "never", "--in-memory"])
        .args([
            "--tcp-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid setting anonymous") && err.contains("nobody could connect"),
        "{err}"
    );

    // The banner: listeners, access, data, limits, in one line; JSON when asked.
    let (child, rx) = spawn_logged(&[
        "--log-format".as_ref(),
        "json".as_ref(),
        "--max-connections".as_ref(),
        "50".as_ref(),
    ]);
    let deadline = Instant::now() + WAIT;
    let banner = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("the banner is logged");
        assert!(line.starts_with('{'), "not JSON: {line}");
        if line.contains("ready:") {
            break line;
        }
    };
    for part in [
        "stomp://127.0.0.1:",
        "ws://127.0.0.1:",
        "anonymous from loopback",
        "journal in",
        "at most 50 connections",
        "memory limit",
    ] {
        assert!(banner.contains(part), "{part:?} missing from {banner}");
    }
    stop(child);
}

/// Starts the broker with exactly `args` (and a data directory of its
/// own) and hands over its log lines.
fn spawn_raw(args: &[&std::ffi::OsStr]) -> (Running, std::sync::mpsc::Receiver<String>) {
    let data = tempfile::tempdir().expect("data");
    let mut child = Running(
        Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(data.path())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("starts"),
        data,
    );
    let stderr = child.0.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Like [`spawn_raw`], with both listeners on ephemeral loopback ports.
fn spawn_logged(args: &[&std::ffi::OsStr]) -> (Running, std::sync::mpsc::Receiver<String>) {
    let mut all: Vec<&std::ffi::OsStr> = [
        "--tcp-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.as_ref())
    .collect();
    all.extend_from_slice(args);
    spawn_raw(&all)
}

/// The ports of log lines, each found by a word of its message: reads
/// until every one is seen.
fn logged_ports(lines: &std::sync::mpsc::Receiver<String>, markers: &[&str]) -> Vec<u16> {
    let mut found = vec![None; markers.len()];
    let deadline = Instant::now() + WAIT;
    while found.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the broker logs {markers:?}"));
        for (i, marker) in markers.iter().enumerate() {
            if line.contains(marker)
                && let Some(rest) = line.split("addr=127.0.0.1:").nth(1)
            {
                found[i] = rest
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .ok();
            }
        }
    }
    found.into_iter().flatten().collect()
}

#[test]
fn admin_calls_the_management_api() {
    let dir = tempfile::tempdir().expect("dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "an-admin-token-of-at-least-32-bytes!\n").expect("write");
    let (child, lines) = spawn_logged(&[
        "--management-listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--management-token-file".as_ref(),
        token_file.as_os_str(),
    ]);
    let ports = logged_ports(
        &lines,
        &["STOMP over TCP listening", "management API listening"],
    );
    let (tcp, api) = (ports[0], ports[1]);
    let url = format!("stomp://127.0.0.1:{tcp}");
    let api = format!("http://127.0.0.1:{api}");
    let out = Command::new(BIN)
        .args(["send", "/queue/admin-cli", "x", "-n", "3", "--url", &url])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let admin = |args: &[&str]| {
        Command::new(BIN)
            .args(["admin", "--api", &api])
            .arg("--token-file")
            .arg(&token_file)
            .args(args)
            .output()
            .expect("runs")
    };
    let out = admin(&["list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"/queue/admin-cli\""), "{text}");
    let out = admin(&["peek", "admin-cli", "-n", "1"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"body\": \"x\""));
    let out = admin(&["purge", "admin-cli"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"purged\": 3"));
    let out = admin(&["purge", "missing"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HTTP 404") && err.contains("/queue/missing"),
        "{err}"
    );
    // Exchanges and bindings, publishing through them, deleting a queue.
    let ok = |args: &[&str]| {
        let out = admin(args);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "{args:?}: {stderr}");
        stdout
    };
    ok(&["declare-exchange", "logs", "fanout"]);
    ok(&["bind", "logs", "--queue", "/queue/log copy"]);
    let text = ok(&["exchanges"]);
    assert!(text.contains("\"/queue/log copy\""), "{text}");
    ok(&[
        "publish",
        "/exchange/logs/any",
        "line 1",
        "-H",
        "x-level:info",
    ]);
    let text = ok(&["peek", "log copy"]);
    assert!(
        text.contains("\"body\": \"line 1\"") && text.contains("\"x-level\": \"info\""),
        "{text}"
    );
    let text = ok(&["delete-queue", "log copy"]);
    assert!(text.contains("\"messages\": 1"), "{text}");
    ok(&["unbind", "logs", "--queue", "/queue/log copy"]);
    ok(&["publish", "/topic/chat.cli-room", "said once"]);
    let text = ok(&["purge-topic", "chat.cli-room"]);
    assert!(text.contains("\"purged\": 1"), "{text}");
    ok(&["delete-topic", "chat.cli-room"]);
    ok(&["delete-exchange", "logs"]);
    for (args, expected) in [
        (&["delete-exchange", "logs"][..], "HTTP 404"),
        (&["declare-exchange", "x", "round-robin"][..], "HTTP 400"),
        (&["bind", "nope", "--queue", "/queue/a"][..], "HTTP 404"),
        (
            &["publish", "/queue/a", "b", "-H", "no-colon"][..],
            "expected name:value",
        ),
    ] {
        let out = admin(args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(expected) && err.trim_end().lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    // A wrong token: 401, one line.
    let out = Command::new(BIN)
        .args(["admin", "--api", &api, "overview"])
        .env("STOMPBOX_MANAGEMENT_TOKEN", "wrong")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HTTP 401") && err.trim_end().lines().count() == 1,
        "{err}"
    );
    stop(child);
}

#[test]
fn listen_addresses_take_host_names() {
    let (child, lines) = spawn_raw(&[
        "--tcp-listen".as_ref(),
        "localhost:0".as_ref(),
        "--http-listen".as_ref(),
        "localhost:0".as_ref(),
    ]);
    let port = logged_ports(&lines, &["STOMP over TCP listening"])[0];
    let reply = connected_frame(port);
    assert!(reply.starts_with("CONNECTED"), "{reply}");
    stop(child);
    let out = Command::new(BIN)
        .args(["--tcp-listen", "no-such-host.invalid:61613", "--in-memory"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("expected host:port, like 127.0.0.1:61613"),
        "{err}"
    );
}
