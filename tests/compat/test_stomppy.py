"""Compatibility with stomp.py, the most used Python STOMP client, over TCP.

Starts the real `stompbox` binary (STOMPBOX_BIN) on ephemeral loopback ports.
Every wait is bounded.
"""

import os
import subprocess
import sys
import threading
import uuid

import pytest
import stomp

import broker as broker_process

WAIT = broker_process.WAIT

# The fixture's broker's HTTP port (WebSocket at /ws), besides the TCP port it yields.
ADDRS = {}


class Recorder(stomp.ConnectionListener):
    """Collects what the broker sends, with bounded waits."""

    def __init__(self):
        self.cond = threading.Condition()
        self.messages = []
        self.receipts = set()
        self.errors = []
        self.disconnected = False

    def on_message(self, frame):
        with self.cond:
            self.messages.append(frame)
            self.cond.notify_all()

    def on_receipt(self, frame):
        with self.cond:
            self.receipts.add(frame.headers["receipt-id"])
            self.cond.notify_all()

    def on_error(self, frame):
        with self.cond:
            self.errors.append(frame)
            self.cond.notify_all()

    def on_disconnected(self):
        with self.cond:
            self.disconnected = True
            self.cond.notify_all()

    def wait(self, predicate, what):
        with self.cond:
            assert self.cond.wait_for(predicate, timeout=WAIT), f"timed out waiting for {what}"

    def wait_messages(self, n):
        self.wait(lambda: len(self.messages) >= n, f"{n} messages")
        return self.messages[:n]

    def wait_receipt(self, receipt):
        self.wait(lambda: receipt in self.receipts, f"receipt {receipt}")


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    data = tmp_path_factory.mktemp("stompbox-data")
    proc, ports = broker_process.start(
        ["--tcp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir", str(data)],
        {"tcp_addr": "tcp", "http_addr": "http"},
    )
    ADDRS["http"] = ports["http"]
    yield ports["tcp"]
    broker_process.stop(proc)


def connect(port):
    conn = stomp.Connection12([("127.0.0.1", port)], heartbeats=(1000, 1000), timeout=WAIT)
    rec = Recorder()
    conn.set_listener("rec", rec)
    conn.connect(wait=True)
    return conn, rec


def subscribe(conn, rec, destination, sub_id, ack):
    receipt = f"sub-{uuid.uuid4()}"
    conn.subscribe(destination=destination, id=sub_id, ack=ack, receipt=receipt)
    rec.wait_receipt(receipt)


def send(conn, rec, destination, body, **headers):
    receipt = f"send-{uuid.uuid4()}"
    conn.send(destination=destination, body=body, receipt=receipt, **headers)
    rec.wait_receipt(receipt)


def test_connect_send_subscribe_receive(broker):
    conn, rec = connect(broker)
    subscribe(conn, rec, "/queue/py-basic", "1", "auto")
    send(conn, rec, "/queue/py-basic", "hello from python", headers={"x-lang": "python"})
    (msg,) = rec.wait_messages(1)
    assert msg.body == "hello from python"
    assert msg.headers["x-lang"] == "python"
    assert msg.headers["subscription"] == "1"
    conn.disconnect(receipt="bye")
    assert "bye" in rec.receipts


def test_client_individual_ack_and_nack(broker):
    conn, rec = connect(broker)
    subscribe(conn, rec, "/queue/py-ack", "s", "client-individual")
    send(conn, rec, "/queue/py-ack", "one")
    send(conn, rec, "/queue/py-ack", "two")
    first, second = rec.wait_messages(2)
    conn.ack(first.headers["ack"], receipt="acked")
    rec.wait_receipt("acked")
    conn.nack(second.headers["ack"], receipt="nacked")
    rec.wait_receipt("nacked")
    (_, _, again) = rec.wait_messages(3)
    assert again.body == "two"
    assert again.headers.get("redelivered") == "true"
    conn.ack(again.headers["ack"])
    conn.disconnect(receipt="bye")
    # Nothing is left for the next consumer.
    conn2, rec2 = connect(broker)
    subscribe(conn2, rec2, "/queue/py-ack", "s", "auto")
    send(conn2, rec2, "/topic/py-sync", "sync")
    assert rec2.messages == []
    conn2.disconnect()


def test_transaction_commit_and_abort(broker):
    conn, rec = connect(broker)
    subscribe(conn, rec, "/queue/py-tx", "t", "auto")
    tx = conn.begin()
    conn.send(destination="/queue/py-tx", body="in tx", transaction=tx)
    send(conn, rec, "/topic/py-sync", "sync")
    assert rec.messages == [], "a transactional SEND waits for COMMIT"
    conn.commit(tx, receipt="committed")
    rec.wait_receipt("committed")
    (msg,) = rec.wait_messages(1)
    assert msg.body == "in tx"
    tx2 = conn.begin()
    conn.send(destination="/queue/py-tx", body="aborted", transaction=tx2)
    conn.abort(tx2, receipt="aborted")
    rec.wait_receipt("aborted")
    send(conn, rec, "/topic/py-sync", "sync")
    assert len(rec.messages) == 1
    conn.disconnect()


def test_error_frame_reaches_the_client(broker):
    conn, rec = connect(broker)
    conn.ack("no-such-ack-id")
    rec.wait(lambda: rec.errors, "an ERROR frame")
    assert "awaiting acknowledgement" in rec.errors[0].headers["message"]
    rec.wait(lambda: rec.disconnected, "the broker to close the connection")


def test_the_readme_worker_pool_example_runs(broker):
    """examples/worker_pool.py, as the README shows it: every job done or
    dead-lettered, a hung worker's job taken over at its ack deadline."""
    example = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "worker_pool.py")
    run = subprocess.run(
        [sys.executable, example, "--port", str(broker), "--queue", f"pool-{uuid.uuid4()}"],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "done 17, dead-lettered 3" in run.stdout, run.stdout
    assert run.stdout.count("(rejected)") == 3, run.stdout


def test_reply_to_round_trip_between_stomp_py_and_a_websocket_service(broker):
    """examples/rpc.py asks over TCP with reply-to:/temp-queue/answers; a
    service on a WebSocket connection answers to the rewritten reply-to."""
    import websocket  # websocket-client

    queue = f"/queue/rpc.{uuid.uuid4()}"
    ws = websocket.create_connection(f"ws://127.0.0.1:{ADDRS['http']}/ws",
                                     subprotocols=["v12.stomp"], timeout=WAIT)

    def read_frame():
        while True:
            data = ws.recv()
            text = data.decode() if isinstance(data, bytes) else data
            if text.strip("\n"):
                return text

    ws.send("CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\0")
    assert read_frame().startswith("CONNECTED")
    ws.send(f"SUBSCRIBE\nid:svc\ndestination:{queue}\nreceipt:ready\n\n\0")
    assert read_frame().startswith("RECEIPT")

    example = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "rpc.py")
    asker = subprocess.Popen(
        [sys.executable, example, "ask", "2", "3", "--port", str(broker), "--queue", queue],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    request = read_frame()
    head, _, body = request.partition("\n\n")
    headers = dict(line.split(":", 1) for line in head.split("\n")[1:] if ":" in line)
    assert headers["reply-to"].startswith("/queue/stompbox.temp."), headers
    total = sum(int(n) for n in body.rstrip("\0").split())
    ws.send(f"SEND\ndestination:{headers['reply-to']}\n\n{total}\0")
    out, err = asker.communicate(timeout=WAIT)
    ws.close()
    assert asker.returncode == 0, out + err
    assert out.strip() == "5", out + err
