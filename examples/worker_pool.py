"""A worker pool on a Stompbox queue, with stomp.py: ack deadlines, retries
and a dead-letter queue. Run the broker, then: python3 examples/worker_pool.py

Each worker takes one job at a time and must ACK it within 2 s
(x-ack-timeout): a worker that hangs loses the job to another worker, not
its connection. A job that cannot be done is NACKed with requeue:false and
lands in /queue/DLQ.jobs with x-death-reason; a job that keeps failing goes
there after max_deliveries attempts when the queue policy sets one.
"""

import argparse
import sys
import threading
import time

import stomp

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, default=61613)
parser.add_argument("--jobs", type=int, default=20)
parser.add_argument("--workers", type=int, default=3)
parser.add_argument("--queue", default="jobs")
args = parser.parse_args()

lock = threading.Lock()
done, dead = set(), {}


class Worker(stomp.ConnectionListener):
    def __init__(self, conn):
        self.conn = conn

    def on_message(self, frame):
        job, ack = frame.body, frame.headers["ack"]
        attempt = int(frame.headers["x-delivery-count"])
        if job.endswith("-slow") and attempt == 0:
            time.sleep(2.5)  # hangs past its deadline: the job moves on
            return
        if job.endswith("-bad"):
            self.conn.nack(ack, requeue="false")  # to the DLQ
            return
        with lock:
            done.add(job)
        self.conn.ack(ack)


class DeadLetters(stomp.ConnectionListener):
    def on_message(self, frame):
        with lock:
            dead[frame.body] = frame.headers["x-death-reason"]


def connect(listener_class):
    conn = stomp.Connection12([("127.0.0.1", args.port)], heartbeats=(0, 0))
    conn.set_listener("", listener_class(conn) if listener_class is Worker else listener_class())
    conn.connect(wait=True)
    return conn


for i in range(args.workers):
    connect(Worker).subscribe(f"/queue/{args.queue}", id=f"w{i}", ack="client-individual",
                              headers={"prefetch-count": "1", "x-ack-timeout": "2000"})
connect(DeadLetters).subscribe(f"/queue/DLQ.{args.queue}", id="dlq", ack="auto")

producer = connect(stomp.ConnectionListener)
jobs = [f"job-{i}" + ("-bad" if i % 7 == 3 else "-slow" if i % 5 == 1 else "")
        for i in range(args.jobs)]
for job in jobs:
    producer.send(f"/queue/{args.queue}", job, headers={"persistent": "true"})

deadline = time.monotonic() + 30
while time.monotonic() < deadline and len(done) + len(dead) < len(jobs):
    time.sleep(0.1)
print(f"done {len(done)}, dead-lettered {len(dead)}: "
      + ", ".join(f"{j} ({why})" for j, why in sorted(dead.items())))
sys.exit(0 if done | set(dead) == set(jobs) else 1)
