// A small STOMP 1.2 over WebSocket client for browsers.
//
// Connects, subscribes, sends with receipts, acks; keeps the connection
// alive with heart-beats driven from a Web Worker (timers in a hidden tab's
// main thread are throttled to about once a minute, which would let the
// broker think the client is gone); reconnects with exponential backoff and
// jitter; and resubscribes, asking the broker for what was missed
// (`x-since` / `x-since-epoch`) on topics that carry stream positions.
//
// Usage:
//   import { StompClient } from "./stomp.js";
//   const client = new StompClient("ws://localhost:15674/ws");
//   client.onstate = (state, detail) => console.log(state, detail);
//   client.connect();
//   const sub = client.subscribe("/topic/chat.general", (msg) => console.log(msg.body), { "x-history": "50" });
//   await client.send("/topic/chat.general", "hello", { "content-type": "text/plain" });

const EOL = "\n";
const NUL = "\0";

function escapeHeader(value) {
  return String(value)
    .replace(/\\/g, "\\\\")
    .replace(/\r/g, "\\r")
    .replace(/\n/g, "\\n")
    .replace(/:/g, "\\c");
}

function unescapeHeader(value) {
  return value.replace(/\\(.)/g, (_, c) => ({ r: "\r", n: "\n", c: ":", "\\": "\\" })[c] ?? c);
}

/** Encodes a frame as text (the body is text too). */
export function encodeFrame(command, headers = {}, body = "") {
  const escape = command === "CONNECT" || command === "STOMP" ? (v) => String(v) : escapeHeader;
  let out = command + EOL;
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || value === null) continue;
    out += escape(name) + ":" + escape(value) + EOL;
  }
  const bytes = new TextEncoder().encode(body);
  if (bytes.length > 0) out += "content-length:" + bytes.length + EOL;
  return out + EOL + body + NUL;
}

/**
 * Decodes one frame from a WebSocket message (the broker sends exactly one
 * frame per message). Returns null for a heart-beat.
 */
export function decodeFrame(data) {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : new Uint8Array(data);
  let start = 0;
  while (start < bytes.length && (bytes[start] === 10 || bytes[start] === 13)) start++;
  if (start >= bytes.length) return null;
  // The header block ends at the first empty line.
  let end = -1;
  for (let i = start; i < bytes.length - 1; i++) {
    if (bytes[i] === 10 && (bytes[i + 1] === 10 || (bytes[i + 1] === 13 && bytes[i + 2] === 10))) {
      end = i + 1;
      break;
    }
  }
  if (end < 0) throw new Error("incomplete frame");
  const head = new TextDecoder().decode(bytes.subarray(start, end));
  const lines = head.split(/\r?\n/).filter((l) => l.length > 0);
  const command = lines.shift();
  const plain = command === "CONNECTED";
  const headers = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const name = plain ? line.slice(0, colon) : unescapeHeader(line.slice(0, colon));
    const value = plain ? line.slice(colon + 1) : unescapeHeader(line.slice(colon + 1));
    if (!(name in headers)) headers[name] = value; // the first occurrence wins
  }
  let bodyStart = end + (bytes[end] === 13 ? 2 : 1);
  let bodyEnd;
  if (headers["content-length"] !== undefined) {
    bodyEnd = bodyStart + Number(headers["content-length"]);
  } else {
    bodyEnd = bytes.indexOf(0, bodyStart);
    if (bodyEnd < 0) bodyEnd = bytes.length;
  }
  const raw = bytes.subarray(bodyStart, bodyEnd);
  return { command, headers, body: new TextDecoder().decode(raw), binaryBody: raw };
}

// Heart-beat ticks come from a worker: workers are not subject to the
// intensive timer throttling of background tabs.
function startTicker(ms, onTick) {
  try {
    const code = `let t; onmessage = (e) => { clearInterval(t); if (e.data > 0) t = setInterval(() => postMessage(0), e.data); };`;
    const url = URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
    const worker = new Worker(url);
    URL.revokeObjectURL(url);
    worker.onmessage = onTick;
    worker.postMessage(ms);
    return () => worker.terminate();
  } catch {
    const t = setInterval(onTick, ms);
    return () => clearInterval(t);
  }
}

export class StompClient {
  /**
   * @param {string} url ws:// or wss:// URL of the broker's /ws endpoint
   * @param {object} options connectHeaders, heartbeat [send, receive] in ms, maxBackoff in ms
   */
  constructor(url, options = {}) {
    this.url = url;
    this.connectHeaders = options.connectHeaders ?? {};
    this.heartbeat = options.heartbeat ?? [10000, 10000];
    this.maxBackoff = options.maxBackoff ?? 30000;
    this.state = "idle";
    this.onstate = () => {};
    this.onerror = () => {};
    this.subscriptions = new Map();
    this.pendingReceipts = new Map();
    this.nextId = 1;
    this.attempt = 0;
    this.ws = null;
    this.stopTicker = null;
    this.lastReceived = 0;
    this.reconnectTimer = null;
    this.wanted = false;
    if (typeof window !== "undefined") {
      // Back from sleep or from a network change: try at once rather than
      // waiting out the backoff.
      window.addEventListener("online", () => this.#retryNow());
      document.addEventListener("visibilitychange", () => {
        if (document.visibilityState === "visible") this.#retryNow();
      });
    }
  }

  #setState(state, detail = "") {
    this.state = state;
    this.onstate(state, detail);
  }

  /** Opens the connection, and keeps reopening it until disconnect(). */
  connect() {
    this.wanted = true;
    this.#open();
  }

  #retryNow() {
    if (this.wanted && (this.state === "reconnecting" || this.state === "offline")) {
      clearTimeout(this.reconnectTimer);
      this.#open();
    }
  }

  #open() {
    this.#setState(this.attempt === 0 ? "connecting" : "reconnecting", "");
    let ws;
    try {
      ws = new WebSocket(this.url, ["v12.stomp"]);
    } catch (e) {
      this.#scheduleReconnect(String(e));
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      ws.send(
        encodeFrame("CONNECT", {
          "accept-version": "1.2",
          host: location.hostname || "localhost",
          "heart-beat": this.heartbeat.join(","),
          ...this.connectHeaders,
        }),
      );
    };
    ws.onmessage = (event) => this.#onMessage(event.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.#cleanup();
      for (const [, p] of this.pendingReceipts) p.reject(new Error("connection lost"));
      this.pendingReceipts.clear();
      if (this.wanted) this.#scheduleReconnect("connection lost");
      else this.#setState("closed");
    };
  }

  #cleanup() {
    if (this.stopTicker) this.stopTicker();
    this.stopTicker = null;
    this.ws = null;
  }

  #scheduleReconnect(reason) {
    // Exponential backoff with full jitter, so a broker restart is not met
    // by every client at the same instant.
    const ceiling = Math.min(this.maxBackoff, 500 * 2 ** Math.min(this.attempt, 10));
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    this.attempt += 1;
    const offline = typeof navigator !== "undefined" && navigator.onLine === false;
    this.#setState(offline ? "offline" : "reconnecting", { reason, delay });
    this.reconnectTimer = setTimeout(() => this.#open(), delay);
  }

  #onMessage(data) {
    this.lastReceived = Date.now();
    let frame;
    try {
      frame = decodeFrame(data);
    } catch (e) {
      this.onerror({ message: "unreadable frame from the broker", detail: String(e) });
      return;
    }
    if (frame === null) return; // heart-beat
    switch (frame.command) {
      case "CONNECTED":
        this.#onConnected(frame);
        break;
      case "MESSAGE": {
        const sub = this.subscriptions.get(frame.headers.subscription);
        if (!sub) return;
        if (frame.headers["x-stream-position"] !== undefined) {
          sub.position = Number(frame.headers["x-stream-position"]);
          sub.epoch = frame.headers["x-stream-epoch"];
        }
        if (frame.headers["x-recovery"] !== undefined) {
          sub.position = Number(frame.headers["x-stream-position"]);
          sub.epoch = frame.headers["x-stream-epoch"];
        }
        sub.callback(frame);
        break;
      }
      case "RECEIPT": {
        const pending = this.pendingReceipts.get(frame.headers["receipt-id"]);
        if (!pending) return;
        this.pendingReceipts.delete(frame.headers["receipt-id"]);
        if (frame.headers["x-error"]) {
          const err = new Error(frame.headers.message || frame.headers["x-error"]);
          err.code = frame.headers["x-error"];
          pending.reject(err);
        } else {
          pending.resolve(frame);
        }
        break;
      }
      case "ERROR":
        this.onerror({ message: frame.headers.message || "error", detail: frame.body });
        break;
    }
  }

  #onConnected(frame) {
    this.attempt = 0;
    const [sx, sy] = (frame.headers["heart-beat"] || "0,0").split(",").map(Number);
    const [cx, cy] = this.heartbeat;
    const sendEvery = cx && sy ? Math.max(cx, sy) : 0;
    const expectEvery = cy && sx ? Math.max(cy, sx) : 0;
    if (sendEvery || expectEvery) {
      const tick = Math.min(...[sendEvery, expectEvery].filter((x) => x > 0)) / 2;
      const ws = this.ws;
      this.stopTicker = startTicker(tick, () => {
        if (this.ws !== ws || ws.readyState !== WebSocket.OPEN) return;
        if (sendEvery) ws.send(EOL);
        if (expectEvery && Date.now() - this.lastReceived > expectEvery * 2) {
          // The broker went silent: the socket is dead even if the browser has not noticed.
          ws.close();
        }
      });
    }
    this.#setState("connected", frame.headers);
    for (const [id, sub] of this.subscriptions) this.#sendSubscribe(id, sub);
  }

  #sendSubscribe(id, sub) {
    const headers = { id, destination: sub.destination, ack: "auto", ...sub.headers };
    if (sub.epoch !== undefined && sub.position !== undefined) {
      // Resubscribing: ask for exactly what was missed instead of the initial history.
      delete headers["x-history"];
      headers["x-since"] = String(sub.position);
      headers["x-since-epoch"] = sub.epoch;
    }
    this.ws.send(encodeFrame("SUBSCRIBE", headers));
  }

  /**
   * Subscribes (now, and again after every reconnect). Returns { id, unsubscribe }.
   * Topic subscriptions remember the last stream position seen.
   */
  subscribe(destination, callback, headers = {}) {
    const id = "sub-" + this.nextId++;
    const sub = { destination, callback, headers };
    this.subscriptions.set(id, sub);
    if (this.state === "connected") this.#sendSubscribe(id, sub);
    return {
      id,
      unsubscribe: () => {
        this.subscriptions.delete(id);
        if (this.state === "connected") this.ws.send(encodeFrame("UNSUBSCRIBE", { id }));
      },
    };
  }

  /** Sends a message; resolves on the broker's receipt, rejects with err.code on a refusal. */
  send(destination, body, headers = {}) {
    if (this.state !== "connected") return Promise.reject(Object.assign(new Error("not connected"), { code: "offline" }));
    const receipt = "r-" + this.nextId++;
    const promise = new Promise((resolve, reject) => this.pendingReceipts.set(receipt, { resolve, reject }));
    this.ws.send(encodeFrame("SEND", { destination, receipt, ...headers }, body));
    return promise;
  }

  /** Sends without waiting for a receipt (for typing indicators). */
  fire(destination, body, headers = {}) {
    if (this.state === "connected") this.ws.send(encodeFrame("SEND", { destination, ...headers }, body));
  }

  /** Acknowledges a MESSAGE of a client or client-individual subscription. */
  ack(message) {
    if (this.state === "connected") this.ws.send(encodeFrame("ACK", { id: message.headers.ack }));
  }

  /** Closes cleanly (no reconnect, no last will). */
  disconnect() {
    this.wanted = false;
    clearTimeout(this.reconnectTimer);
    if (this.ws && this.state === "connected") {
      this.ws.send(encodeFrame("DISCONNECT", { receipt: "bye" }));
    }
    if (this.ws) this.ws.close();
    this.#cleanup();
    this.#setState("closed");
  }
}
