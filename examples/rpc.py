"""Request/reply over Stompbox with stomp.py: a client asks on /queue/rpc.add
with reply-to:/temp-queue/answers; the broker rewrites reply-to to a queue
of that connection's own, and the service answers there without knowing
who asked. Run the broker, then in two shells:

    python3 examples/rpc.py serve
    python3 examples/rpc.py ask 2 3
"""

import argparse
import sys
import threading

import stomp

parser = argparse.ArgumentParser()
parser.add_argument("role", choices=["serve", "ask"])
parser.add_argument("numbers", nargs="*", type=int)
parser.add_argument("--port", type=int, default=61613)
parser.add_argument("--queue", default="/queue/rpc.add")
args = parser.parse_args()

conn = stomp.Connection12([("127.0.0.1", args.port)], heartbeats=(0, 0))


class Service(stomp.ConnectionListener):
    def on_message(self, frame):
        total = sum(int(n) for n in frame.body.split())
        conn.send(frame.headers["reply-to"], str(total),
                  headers={"correlation-id": frame.headers.get("correlation-id", "")})


class Asker(stomp.ConnectionListener):
    def __init__(self):
        self.answer = None
        self.done = threading.Event()

    def on_message(self, frame):
        self.answer = frame.body
        self.done.set()


if args.role == "serve":
    conn.set_listener("", Service())
    conn.connect(wait=True)
    conn.subscribe(args.queue, id="rpc", ack="auto")
    print("serving", args.queue, flush=True)
    threading.Event().wait()
else:
    asker = Asker()
    conn.set_listener("", asker)
    conn.connect(wait=True)
    conn.send(args.queue, " ".join(map(str, args.numbers)),
              headers={"reply-to": "/temp-queue/answers", "correlation-id": "1"})
    if not asker.done.wait(10):
        sys.exit("no answer within 10 s")
    print(asker.answer)
    conn.disconnect()
