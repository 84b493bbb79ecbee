// Starts and stops the real stompbox binary for browser tests.

import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

export const BIN = process.env.STOMPBOX_BIN ?? new URL("../../target/debug/stompbox", import.meta.url).pathname;
export const WAIT = 10_000;

/** Starts the broker; port 0 means ephemeral. Resolves once both ports are known. */
export function startBroker({ tcpPort = 0, httpPort = 0, args = [], dataDir } = {}) {
  // Each broker its own journal directory, removed when it stops, unless
  // a restart is to find what the previous broker kept.
  dataDir ??= fs.mkdtempSync(path.join(os.tmpdir(), "stompbox-data-"));
  const proc = spawn(
    BIN,
    ["--tcp-listen", `127.0.0.1:${tcpPort}`, "--http-listen", `127.0.0.1:${httpPort}`, "--log", "info", "--data-dir", dataDir, ...args],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  return new Promise((resolve, reject) => {
    let log = "";
    const timer = setTimeout(() => reject(new Error(`broker did not start:\n${log}`)), WAIT);
    proc.on("exit", (code) => reject(new Error(`broker exited with ${code}:\n${log}`)));
    proc.stderr.on("data", (chunk) => {
      log += chunk;
      const tcp = log.match(/tcp_addr=127\.0\.0\.1:(\d+)/);
      const http = log.match(/http_addr=127\.0\.0\.1:(\d+)/);
      if (tcp && http) {
        clearTimeout(timer);
        proc.removeAllListeners("exit");
        const broker = { proc, dataDir, tcpPort: Number(tcp[1]), httpPort: Number(http[1]), url: `http://127.0.0.1:${http[1]}/`, log: () => log };
        resolve(broker);
      }
    });
  });
}

/** SIGTERM, then wait (bounded) for the exit; resolves to the exit code.
 *  The data directory is removed unless `keepData`. */
export async function stopBroker(broker, { keepData = false } = {}) {
  const exited = () => broker.proc.exitCode !== null || broker.proc.signalCode !== null;
  if (!exited()) broker.proc.kill("SIGTERM");
  const deadline = Date.now() + WAIT;
  while (!exited()) {
    if (Date.now() > deadline) {
      broker.proc.kill("SIGKILL");
      throw new Error(`broker did not stop on SIGTERM; its log:\n${broker.log().slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!keepData) fs.rmSync(broker.dataDir, { recursive: true, force: true });
  return broker.proc.exitCode;
}

/** A raw STOMP-over-TCP client, as a script would use. */
export class TcpStomp {
  constructor(port) {
    this.port = port;
    this.frames = [];
    this.waiters = [];
    this.buf = Buffer.alloc(0);
  }

  open() {
    return new Promise((resolve, reject) => {
      this.sock = net.connect(this.port, "127.0.0.1", resolve);
      this.sock.on("error", reject);
      this.sock.on("data", (d) => {
        this.buf = Buffer.concat([this.buf, d]);
        let nul;
        while ((nul = this.buf.indexOf(0)) >= 0) {
          const text = this.buf.subarray(0, nul).toString("utf8").replace(/^[\r\n]+/, "");
          this.buf = this.buf.subarray(nul + 1);
          if (!text) continue;
          const [head, ...rest] = text.split("\n\n");
          const [command, ...lines] = head.split("\n");
          const headers = {};
          for (const l of lines) {
            const i = l.indexOf(":");
            if (i > 0 && !(l.slice(0, i) in headers)) headers[l.slice(0, i)] = l.slice(i + 1);
          }
          this.frames.push({ command, headers, body: rest.join("\n\n") });
          this.waiters.forEach((w) => w());
        }
      });
    });
  }

  send(command, headers, body = "") {
    const lines = Object.entries(headers).map(([k, v]) => `${k}:${v}`);
    this.sock.write(`${command}\n${lines.join("\n")}\n\n${body}\0`);
  }

  /** Waits for a frame matching `pred`, bounded by WAIT. */
  async waitFor(pred, what) {
    const deadline = Date.now() + WAIT;
    for (;;) {
      const found = this.frames.find(pred);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => {
        this.waiters.push(r);
        setTimeout(r, 100);
      });
    }
  }

  close() {
    this.sock.destroy();
  }
}

/** Debian's Chromium, headless; this machine has no network but loopback,
 *  so Chromium is kept from trying. */
export function launchChromium() {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}
