"""stomp.py over TLS: `set_ssl` against the broker's STOMP-over-TLS listener,
with and without a client certificate (mutual TLS, the certificate's common
name as the login). The CA and certificates are made by trustme in the test.
Starts the real `stompbox` binary (STOMPBOX_BIN) on ephemeral loopback ports.
"""

import uuid

import pytest
import stomp
import trustme

import broker as broker_process

from test_stomppy import WAIT, Recorder


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A broker with TLS, client certificates checked against the test CA."""
    d = tmp_path_factory.mktemp("stompbox-tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.private_key_pem.write_to_path(str(d / "key.pem"))
    with open(d / "cert.pem", "wb") as f:
        for blob in server.cert_chain_pems:
            f.write(blob.bytes())
    alice = ca.issue_cert("alice.example", common_name="alice")
    alice.private_key_pem.write_to_path(str(d / "alice.key"))
    with open(d / "alice.pem", "wb") as f:
        for blob in alice.cert_chain_pems:
            f.write(blob.bytes())
    proc, ports = broker_process.start(
        ["--tcp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
         "--tls-listen", "127.0.0.1:0", "--https-listen", "127.0.0.1:0",
         "--tls-cert", str(d / "cert.pem"), "--tls-key", str(d / "key.pem"),
         "--tls-client-ca", str(d / "ca.pem"), "--tls-cert-login", "--in-memory"],
        {"stomp_addr": "tls"},
    )
    port = ports["tls"]
    yield {"port": port, "dir": d}
    broker_process.stop(proc)


def connect_tls(tls, cert=None):
    host = ("127.0.0.1", tls["port"])
    conn = stomp.Connection12([host], heartbeats=(1000, 1000), timeout=WAIT)
    d = tls["dir"]
    if cert:
        conn.set_ssl(for_hosts=[host], ca_certs=str(d / "ca.pem"),
                     cert_file=str(d / f"{cert}.pem"), key_file=str(d / f"{cert}.key"))
    else:
        conn.set_ssl(for_hosts=[host], ca_certs=str(d / "ca.pem"))
    rec = Recorder()
    conn.set_listener("rec", rec)
    conn.connect(wait=True)
    return conn, rec


def round_trip(sender, receiver, destination):
    (s, s_rec), (r, r_rec) = sender, receiver
    receipt = f"sub-{uuid.uuid4()}"
    r.subscribe(destination=destination, id="1", ack="auto", receipt=receipt)
    r_rec.wait_receipt(receipt)
    receipt = f"send-{uuid.uuid4()}"
    s.send(destination=destination, body="over tls", receipt=receipt)
    s_rec.wait_receipt(receipt)
    return r_rec.wait_messages(1)[0]


def test_connection12_with_set_ssl_round_trip(tls):
    a, b = connect_tls(tls), connect_tls(tls)
    try:
        got = round_trip(a, b, "/queue/tls-" + uuid.uuid4().hex)
        assert got.body == "over tls"
        # No client certificate: anonymous from loopback.
        assert got.headers["x-sender"] == "(anonymous)"
    finally:
        a[0].disconnect()
        b[0].disconnect()


def test_a_client_certificate_is_the_login(tls):
    a, b = connect_tls(tls, cert="alice"), connect_tls(tls)
    try:
        got = round_trip(a, b, "/topic/tls-" + uuid.uuid4().hex)
        assert got.headers["x-sender"] == "alice"
    finally:
        a[0].disconnect()
        b[0].disconnect()
