// The admin page in real headless Chromium (Debian's /usr/bin/chromium)
// against the real broker's management API: sign in, watch a queue's depth
// rise and fall, purge it, close a connection, and use the STOMP console.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startBroker, stopBroker, TcpStomp, WAIT, launchChromium } from "./broker.mjs";

const SHOTS = new URL("../../target/browser/", import.meta.url).pathname;
const TOKEN = "admin-page-token-of-at-least-32-bytes";

let broker;
let browser;
let adminUrl;

before(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "stompbox-admin-"));
  const tokenFile = path.join(dir, "token");
  fs.writeFileSync(tokenFile, `${TOKEN}\n`);
  broker = await startBroker({ args: ["--management-listen", "127.0.0.1:0", "--management-token-file", tokenFile] });
  const found = broker.log().match(/admin page at http:\/\/127\.0\.0\.1:(\d+)\/admin/);
  assert.ok(found, `the broker logs its admin page:\n${broker.log()}`);
  adminUrl = `http://127.0.0.1:${found[1]}/admin`;
  browser = await launchChromium();
  fs.mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  if (broker) await stopBroker(broker);
});

async function adminPage() {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const errors = [];
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(adminUrl);
  return { context, page, errors };
}

test("a wrong token is refused once, without a loop", async () => {
  const { context, page, errors } = await adminPage();
  await page.fill("#token", "not-the-token");
  await page.click("#signin button[type=submit]");
  await page.locator("#signin-error", { hasText: "Wrong token" }).waitFor();
  assert.equal(await page.locator("#dashboard").isHidden(), true);
  // The 401 is the only error the page logs (the browser reports the failed fetch).
  assert.ok(errors.every((e) => e.includes("401")), errors.join("\n"));
  await context.close();
});

test("a queue's depth rises and falls, purge empties it, the console gets a RECEIPT", async () => {
  const { context, page, errors } = await adminPage();
  await page.fill("#token", TOKEN);
  await page.click("#signin button[type=submit]");
  await page.locator("#dashboard").waitFor();

  const producer = new TcpStomp(broker.tcpPort);
  await producer.open();
  producer.send("CONNECT", { "accept-version": "1.2", host: "localhost" });
  await producer.waitFor((f) => f.command === "CONNECTED", "CONNECTED");
  for (let i = 0; i < 5; i++) producer.send("SEND", { destination: "/queue/admin-page", receipt: `r${i}` }, `job ${i}`);
  await producer.waitFor((f) => f.headers["receipt-id"] === "r4", "the fifth receipt");
  const depth = page.locator('#queues tr[data-queue="/queue/admin-page"] td[data-field="messages"]');
  await depth.filter({ hasText: /^5$/ }).waitFor();
  await page.screenshot({ path: `${SHOTS}admin-depth-5.png` });

  // A consumer takes two: the depth falls.
  producer.send("SUBSCRIBE", { id: "s", destination: "/queue/admin-page", ack: "client-individual", "prefetch-count": "2" });
  await producer.waitFor((f) => f.command === "MESSAGE" && f.body === "job 1", "two messages");
  await depth.filter({ hasText: /^3$/ }).waitFor();

  // Peek shows what waits, in order.
  const row = page.locator('#queues tr[data-queue="/queue/admin-page"]');
  await row.getByRole("button", { name: "Peek" }).click();
  await page.locator("#peeked-list li", { hasText: "job 2" }).first().waitFor();

  page.once("dialog", (d) => d.accept());
  await row.getByRole("button", { name: "Purge" }).click();
  await depth.filter({ hasText: /^0$/ }).waitFor();
  await page.screenshot({ path: `${SHOTS}admin-purged.png` });

  // The producer's connection is listed, and closing it reaches it.
  const connections = page.locator("#connections tbody tr");
  await connections.filter({ hasText: "tcp" }).first().waitFor();
  await connections.filter({ hasText: "tcp" }).first().getByRole("button", { name: "Close" }).click();
  const closed = await producer.waitFor((f) => f.command === "ERROR", "the ERROR of an administrator's close");
  assert.equal(closed.headers.message, "closed by an administrator");

  // The STOMP console: CONNECT, then a SEND with a receipt, typed in.
  await page.click("#console-open");
  await page.locator("#console-output", { hasText: "connected to ws://" }).waitFor();
  await page.click("#console-send");
  await page.locator("#console-output", { hasText: "CONNECTED" }).waitFor();
  await page.fill("#console-input", "SEND\ndestination:/queue/from-console\nreceipt:typed-1\n\nhello from the browser");
  await page.click("#console-send");
  await page.locator("#console-output", { hasText: "receipt-id:typed-1" }).waitFor();
  await page.locator('#queues tr[data-queue="/queue/from-console"] td[data-field="messages"]', { hasText: /^1$/ }).waitFor();
  await page.screenshot({ path: `${SHOTS}admin-console.png` });
  assert.deepEqual(errors, []);
  await context.close();
});

test("an exchange is declared, a queue bound, a routed message seen, then unbound, deleted, and a queue deleted", async () => {
  const { context, page, errors } = await adminPage();
  await page.fill("#token", TOKEN);
  await page.click("#signin button[type=submit]");
  await page.locator("#dashboard").waitFor();

  await page.fill("#declare-name", "orders");
  await page.selectOption("#declare-type", "topic");
  await page.click("#declare button[type=submit]");
  const orders = page.locator('#exchanges tr[data-exchange="orders"]');
  await orders.filter({ hasText: "topic" }).waitFor();

  await page.fill("#bind-exchange", "orders");
  await page.fill("#bind-queue", "/queue/orders-eu");
  await page.fill("#bind-key", "eu.*");
  await page.click("#bind button[type=submit]");
  await orders.filter({ hasText: "eu.* → /queue/orders-eu" }).waitFor();

  const producer = new TcpStomp(broker.tcpPort);
  await producer.open();
  producer.send("CONNECT", { "accept-version": "1.2", host: "localhost" });
  await producer.waitFor((f) => f.command === "CONNECTED", "CONNECTED");
  producer.send("SEND", { destination: "/exchange/orders/eu.paid", receipt: "routed" }, "order 1");
  await producer.waitFor((f) => f.headers["receipt-id"] === "routed", "the receipt");
  const depth = page.locator('#queues tr[data-queue="/queue/orders-eu"] td[data-field="messages"]');
  await depth.filter({ hasText: /^1$/ }).waitFor();
  await page.screenshot({ path: `${SHOTS}admin-exchanges.png` });

  // A refusal is shown, not thrown: the same name with another type.
  await page.fill("#declare-name", "orders");
  await page.selectOption("#declare-type", "fanout");
  await page.click("#declare button[type=submit]");
  await page.locator("#notice.error", { hasText: "exists with type topic" }).waitFor();

  await orders.getByRole("button", { name: "Unbind" }).click();
  await orders.filter({ hasNotText: "/queue/orders-eu" }).waitFor();
  page.once("dialog", (d) => d.accept());
  await orders.getByRole("button", { name: "Delete" }).click();
  await orders.waitFor({ state: "detached" });

  page.once("dialog", (d) => d.accept());
  await page.locator('#queues tr[data-queue="/queue/orders-eu"]').getByRole("button", { name: "Delete" }).click();
  await page.locator('#queues tr[data-queue="/queue/orders-eu"]').waitFor({ state: "detached" });
  // A room's history purged from the topics table.
  producer.send("SEND", { destination: "/topic/chat.admin-room", receipt: "said" }, "something regrettable");
  await producer.waitFor((f) => f.headers["receipt-id"] === "said", "the room's receipt");
  const roomRow = page.locator('#topics tr[data-topic="/topic/chat.admin-room"]');
  page.once("dialog", (d) => d.accept());
  await roomRow.getByRole("button", { name: "Purge history" }).click();
  await page.locator("#notice", { hasText: '"purged":1' }).waitFor();
  producer.close?.();
  // The refused declaration's 409 is the only error the browser logs.
  assert.ok(errors.every((e) => e.includes("409")), errors.join("\n"));
  await context.close();
});
