#!/usr/bin/env python3
"""Hostile-client fuzzing of a running broker over TCP and WebSocket.

Each round opens a connection, sends CONNECT, then a few frames made by
mutating valid ones (NULs, CR/LF, colons and backslashes in headers,
wrong content-length, huge lengths, random bytes, truncation, frames split
across writes), and reads whatever comes back. Between rounds a bystander
checks that the broker still answers a SEND with its RECEIPT. Loopback
only, bounded by --seconds. Prints frames sent, ERRORs received, rounds
where the broker closed on us, and whether the broker survived.

    python3 scripts/fuzz-wire.py --port 61613 --http-port 15674 --seconds 300
"""
import argparse
import base64
import os
import random
import socket
import struct
import sys
import time

VALID = [
    b"SEND\ndestination:/queue/fuzz\n\nhello\0",
    b"SEND\ndestination:/topic/chat.fuzz\nreceipt:r1\ncontent-type:text/plain\n\nhi there\0",
    b"SUBSCRIBE\nid:1\ndestination:/queue/fuzz\nack:client-individual\n\n\0",
    b"SUBSCRIBE\nid:2\ndestination:/topic/chat.fuzz\nx-history:5\nx-presence:fz\n\n\0",
    b"UNSUBSCRIBE\nid:1\n\n\0",
    b"BEGIN\ntransaction:t\n\n\0",
    b"SEND\ndestination:/queue/fuzz\ntransaction:t\n\nin tx\0",
    b"COMMIT\ntransaction:t\n\n\0",
    b"ACK\nid:1\n\n\0",
    b"NACK\nid:2\n\n\0",
    b"SEND\ndestination:/queue/fuzz\ncontent-length:5\n\nab\0cd\0",
    b"\n",
]
NASTY = [b"\0", b"\r", b"\n", b":", b"\\", b"\\c", b"\\x", b"\xff", b"\xc3\x28", b" ", b"\r\n", b"\n\n"]


def mutate(frame: bytes, rng: random.Random) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        pos = rng.randrange(len(data) + 1)
        if op == 0:
            data[pos:pos] = rng.choice(NASTY)
        elif op == 1 and data:
            del data[rng.randrange(len(data))]
        elif op == 2:
            data[pos:pos] = os.urandom(rng.randint(1, 16))
        elif op == 3:
            data[pos:pos] = b"x-h" + str(rng.randint(0, 9)).encode() + b":" + rng.choice(NASTY) + b"v\n"
        elif op == 4:
            data = bytearray(frame.replace(b"\n\n", b"\ncontent-length:" + str(rng.choice([0, 1, 3, 10**6, 10**12, -1])).encode() + b"\n\n", 1))
        elif op == 5:
            data = data[: rng.randrange(len(data) + 1)]
        elif op == 6:
            data[pos:pos] = b"x" * rng.choice([100, 20000, 70000])
        else:
            data = bytearray(frame.lower() if rng.random() < 0.3 else frame)
    return bytes(data)


def ws_connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n".encode()
    )
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        reply += chunk
    if b" 101 " not in reply.split(b"\r\n", 1)[0]:
        raise ConnectionError(reply.split(b"\r\n", 1)[0].decode(errors="replace"))
    return s


def ws_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x82])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_all(s: socket.socket, limit: float) -> bytes:
    s.settimeout(limit)
    out = b""
    try:
        while len(out) < 1 << 20:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (socket.timeout, ConnectionError, OSError):
        pass
    return out


def bystander_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"CONNECT\naccept-version:1.2\n\n\0SEND\ndestination:/queue/bystander\nreceipt:ok\n\nping\0")
            s.settimeout(5)
            got = b""
            while b"receipt-id:ok" not in got:
                chunk = s.recv(4096)
                if not chunk:
                    return False
                got += chunk
            return True
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=61613)
    ap.add_argument("--http-port", type=int, default=15674)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    end = time.time() + args.seconds
    frames = errors = closed = rounds = failures = 0
    while time.time() < end:
        rounds += 1
        ws = rng.random() < 0.4
        try:
            s = ws_connect(args.http_port) if ws else socket.create_connection(("127.0.0.1", args.port), timeout=2)
        except OSError:
            failures += 1
            continue
        with s:
            payloads = [b"CONNECT\naccept-version:1.2\n\n\0"]
            for _ in range(rng.randint(1, 6)):
                base = rng.choice(VALID)
                payloads.append(mutate(base, rng) if rng.random() < 0.8 else base)
            try:
                for p in payloads:
                    if ws:
                        s.sendall(ws_frame(p))
                    else:
                        cut = rng.randrange(len(p) + 1)
                        s.sendall(p[:cut])
                        s.sendall(p[cut:])
                    frames += 1
            except OSError:
                pass
            reply = read_all(s, 0.01)
            errors += reply.count(b"ERROR\n")
            if not reply or reply.endswith(b"\0") and b"ERROR" in reply:
                closed += 1
        if rounds % 200 == 0 and not bystander_ok(args.port):
            print(f"the broker stopped answering after {rounds} rounds", file=sys.stderr)
            return 1
    alive = bystander_ok(args.port)
    print(f"rounds {rounds}, frames sent {frames}, ERRORs received {errors}, connections closed on us {closed}, "
          f"connect failures {failures}, broker alive at the end: {alive}")
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
