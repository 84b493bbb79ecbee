// The chat page as people use it, in real headless Chromium (Debian's
// /usr/bin/chromium) against the real broker: the layout in busy rooms at
// desktop and phone sizes, older history on scrolling up, logging in when
// the broker asks, verified names, direct messages, links, and reloads
// that are not a leave and a join. Every state is saved as a screenshot.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { BIN, startBroker, stopBroker, TcpStomp, WAIT, launchChromium } from "./broker.mjs";

const SHOTS = new URL("../../target/browser/", import.meta.url).pathname;
const HISTORY = 300;

let open; // a broker that lets guests in, its chat rooms keeping 1,000 messages
let closed; // a broker with users and anonymous = "never"
let browser;
const errors = [];

function config(lines) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "stompbox-chat-"));
  const file = path.join(dir, "stompbox.toml");
  fs.writeFileSync(file, lines.join("\n") + "\n");
  return file;
}

const hash = (password) => execFileSync(BIN, ["passwd"], { input: password }).toString().trim();

before(async () => {
  const rooms = ['[[topics]]', 'pattern = "/topic/chat.*"', "history = 1000", "publish_rate = 0.0"];
  open = await startBroker({ args: ["--config", config(rooms)] });
  closed = await startBroker({
    args: ["--config", config([
      'anonymous = "never"',
      "[users]",
      `alice = "${hash("alice-pw")}"`,
      `bob = "${hash("bob-pw")}"`,
      `carol = "${hash("carol-pw")}"`,
      ...rooms,
    ])],
  });
  browser = await launchChromium();
  fs.mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  if (open) await stopBroker(open);
  if (closed) await stopBroker(closed);
  assert.deepEqual(errors, [], "no console errors on any page");
});

async function newPage(broker, viewport = { width: 1100, height: 700 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(broker.url);
  return { context, page };
}

async function guest(broker, nick, room, viewport) {
  const { context, page } = await newPage(broker, viewport);
  await page.fill("#nick", nick);
  await page.fill("#first-room", room);
  await page.click("#login-form button[type=submit]");
  await page.locator('#state[data-state="connected"]').waitFor();
  return { context, page };
}

async function member(name, room = "team") {
  const { context, page } = await newPage(closed);
  await page.fill("#nick", name);
  await page.fill("#first-room", room);
  await page.click("#login-form button[type=submit]");
  // The broker refuses guests: the page asks for a login, once.
  await page.locator("#login-error", { hasText: "asks you to log in" }).waitFor();
  await page.fill("#login-name", name);
  await page.fill("#password", `${name}-pw`);
  await page.click("#login-form button[type=submit]");
  await page.locator('#state[data-state="connected"]').waitFor();
  await page.locator("#me", { hasText: `signed in as ${name}` }).waitFor();
  return { context, page };
}

const chatLine = (page, text) => page.locator("#messages li[data-kind=chat]", { hasText: text });

async function say(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

/** Publishes lines numbered from `from` to a room over TCP, with a receipt for the last. */
async function fill(broker, room, count, from = 0) {
  const tcp = new TcpStomp(broker.tcpPort);
  await tcp.open();
  tcp.send("CONNECT", { "accept-version": "1.2", host: "localhost" });
  await tcp.waitFor((f) => f.command === "CONNECTED", "CONNECTED");
  for (let i = from; i < from + count; i++) {
    const last = i === from + count - 1;
    tcp.send("SEND", { destination: `/topic/chat.${room}`, "x-nick": "history", ...(last ? { receipt: "filled" } : {}) }, `line ${i}`);
  }
  await tcp.waitFor((f) => f.headers["receipt-id"] === "filled", "the last line's receipt");
  tcp.close();
}

/** Whether `box` lies within the viewport. */
function inView(box, viewport) {
  return box && box.y >= 0 && box.x >= 0 && box.y + box.height <= viewport.height && box.x + box.width <= viewport.width;
}

for (const viewport of [{ width: 1100, height: 700 }, { width: 390, height: 844 }]) {
  test(`at ${viewport.width}x${viewport.height}, a room with ${HISTORY} messages of history opens at the newest, with the composer in view`, async () => {
    const room = `busy${viewport.width}`;
    await fill(open, room, HISTORY);
    const { context, page } = await guest(open, "reader", room, viewport);
    await chatLine(page, `line ${HISTORY - 1}`).waitFor();
    const composer = await page.locator("#send-form").boundingBox();
    assert.ok(inView(composer, viewport), `composer at ${JSON.stringify(composer)}`);
    const newest = await chatLine(page, `line ${HISTORY - 1}`).boundingBox();
    assert.ok(inView(newest, viewport), `newest message at ${JSON.stringify(newest)}`);
    // The page itself does not scroll; the message list does.
    const page_ = await page.evaluate(() => ({ height: document.documentElement.scrollHeight, inner: innerHeight }));
    assert.ok(page_.height <= page_.inner, JSON.stringify(page_));
    await page.screenshot({ path: `${SHOTS}chat-history-${viewport.width}.png` });

    // Scrolled up: a "new messages" button when one arrives, and older history loads.
    await page.locator("#messages").evaluate((list) => { list.scrollTop = list.scrollHeight / 2; });
    await fill(open, room, 1, HISTORY);
    await page.locator("#new-below").waitFor();
    await page.screenshot({ path: `${SHOTS}chat-new-below-${viewport.width}.png` });
    await page.click("#new-below");
    await page.locator("#new-below").waitFor({ state: "hidden" });
    const first = page.locator("#messages li[data-kind=chat] .text", { hasText: /^line 0$/ });
    while (!(await first.count())) {
      const before = await page.locator("#messages li[data-kind=chat]").count();
      await page.locator("#messages").evaluate((list) => { list.scrollTop = 0; list.dispatchEvent(new Event("scroll")); });
      await page.waitForFunction((n) => document.querySelectorAll("#messages li[data-kind=chat]").length > n, before);
    }
    const lines = await page.locator("#messages li[data-kind=chat] .text").allTextContents();
    const numbers = lines.filter((t) => t.startsWith("line ")).map((t) => Number(t.slice(5)));
    assert.deepEqual(numbers, numbers.slice().sort((a, b) => a - b), "in order");
    assert.equal(new Set(numbers).size, numbers.length, "no line twice");
    assert.equal(numbers.length, HISTORY + 1, `all ${HISTORY + 1} loaded`);
    await page.screenshot({ path: `${SHOTS}chat-oldest-${viewport.width}.png` });
    await context.close();
  });
}

test("links are anchors that open apart, other schemes stay text, and days are separated", async () => {
  const { context, page } = await guest(open, "linker", "links");
  await say(page, "see https://example.com/a?b=1, and javascript:alert(1) too");
  const line = chatLine(page, "see ");
  await line.waitFor();
  const anchors = await line.locator("a").evaluateAll((as) => as.map((a) => ({ href: a.href, rel: a.rel, target: a.target, text: a.textContent })));
  assert.deepEqual(anchors, [{ href: "https://example.com/a?b=1", rel: "noopener noreferrer", target: "_blank", text: "https://example.com/a?b=1" }]);
  assert.equal(await page.locator("#messages li[data-kind=day]", { hasText: "Today" }).count(), 1);
  await context.close();
});

test("the room directory lists the rooms that exist with how many are in each, and joins one", async () => {
  const one = await guest(open, "dee", "directory-a");
  const two = await guest(open, "eve", "directory-a");
  const three = await guest(open, "fay", "directory-b");
  await three.page.click("#browse");
  const a = three.page.locator('#directory button[data-room="directory-a"]');
  await a.waitFor();
  assert.equal(await a.locator(".count").textContent(), "2");
  assert.equal(await three.page.locator('#directory button[data-room="directory-b"] .count').textContent(), "1");
  await three.page.screenshot({ path: `${SHOTS}chat-directory.png` });
  await a.click();
  await three.page.locator('#room-list button[aria-current="true"][data-room="directory-a"]').waitFor();
  for (const u of [one, two, three]) await u.context.close();
});

test("a reload is not a leave and a join", async () => {
  const ana = await guest(open, "ana", "lobby");
  const bob = await guest(open, "bob", "lobby");
  await bob.page.waitForFunction(() => [...document.querySelectorAll("#presence li")].some((li) => li.textContent === "ana"));
  await ana.page.reload();
  await ana.page.locator('#state[data-state="connected"]').waitFor();
  await say(ana.page, "back after a reload");
  await chatLine(bob.page, "back after a reload").waitFor();
  // Any leave still held back has been settled one way or the other.
  await bob.page.waitForFunction(() => document.body.dataset.pendingLeaves === "0");
  const system = await bob.page.locator("#messages li[data-kind=system]").allTextContents();
  assert.ok(!system.some((t) => /ana (left|joined)/.test(t)), system.join("\n"));
  // A real leave is still told.
  await ana.context.close();
  await bob.page.locator("#messages li[data-kind=system]", { hasText: "ana left" }).waitFor();
  await bob.context.close();
});

test("unread messages count in the tab's title, a mention notifies, and a room can be left", async () => {
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on("pageerror", (e) => errors.push(String(e)));
  // The browser's notifications, recorded instead of shown.
  await page.addInitScript(() => {
    window.notified = [];
    window.Notification = class {
      constructor(title, options) { window.notified.push({ title, body: options?.body }); }
      static get permission() { return "granted"; }
      static requestPermission() { return Promise.resolve("granted"); }
    };
  });
  await page.goto(open.url);
  await page.fill("#nick", "gil");
  await page.fill("#first-room", "mentions");
  await page.click("#login-form button[type=submit]");
  await page.locator('#state[data-state="connected"]').waitFor();
  await page.click("#notify");
  await page.locator("#notify", { hasText: "Notifying" }).waitFor();
  await page.fill("#join-room", "elsewhere");
  await page.press("#join-room", "Enter");
  await page.locator('#room-list button[aria-current="true"][data-room="elsewhere"]').waitFor();
  const hal = await guest(open, "hal", "mentions");
  await say(hal.page, "are you around, @gil?");
  await page.waitForFunction(() => document.title === "(1) Stompbox chat");
  await page.waitForFunction(() => window.notified.length === 1);
  assert.deepEqual(await page.evaluate(() => window.notified), [{ title: "hal in #mentions", body: "are you around, @gil?" }]);
  await page.click('#room-list button[data-room="mentions"]');
  await page.waitForFunction(() => document.title === "Stompbox chat");
  assert.ok(await chatLine(page, "are you around").evaluate((li) => li.classList.contains("mention")));
  // Leaving: the room goes from the list, and hal sees gil leave (after the grace).
  await page.click("#leave");
  await page.locator('#room-list button[data-room="mentions"]').waitFor({ state: "detached" });
  await page.locator('#room-list button[aria-current="true"][data-room="elsewhere"]').waitFor();
  await hal.page.locator("#messages li[data-kind=system]", { hasText: "gil left" }).waitFor();
  await hal.context.close();
  await context.close();
});

test("two guests with one nickname are told apart", async () => {
  const one = await guest(open, "sam", "twins");
  const two = await guest(open, "sam", "twins");
  await say(one.page, "from the first sam");
  await say(two.page, "from the second sam");
  await chatLine(one.page, "from the second sam").waitFor();
  const authors = await one.page.locator("#messages li[data-kind=chat] .author").allTextContents();
  assert.equal(new Set(authors).size, 2, authors.join(", "));
  assert.ok(await one.page.locator("#messages .author.guest").count() >= 2, "guests are marked");
  await one.context.close();
  await two.context.close();
});

test("with anonymous = \"never\": a wrong password is said once, the right one logs in", async () => {
  const { context, page } = await newPage(closed);
  await page.fill("#nick", "someone");
  await page.click("#login-form button[type=submit]");
  await page.locator("#login-error", { hasText: "asks you to log in" }).waitFor();
  await page.screenshot({ path: `${SHOTS}chat-login-form.png` });
  await page.fill("#login-name", "alice");
  await page.fill("#password", "not-her-password");
  await page.click("#login-form button[type=submit]");
  await page.locator("#login-error", { hasText: "Wrong login or password." }).waitFor();
  // No reconnect loop: the client stays closed until the form is sent again.
  await page.locator('#state[data-state="closed"]').waitFor();
  assert.equal(await page.locator("#login").isVisible(), true);
  await page.fill("#password", "alice-pw");
  await page.click("#login-form button[type=submit]");
  await page.locator('#state[data-state="connected"]').waitFor();
  await page.locator("#me", { hasText: "signed in as alice" }).waitFor();
  await say(page, "alice is in");
  await chatLine(page, "alice is in").waitFor();
  assert.equal(await chatLine(page, "alice is in").locator(".author").textContent(), "alice");
  await context.close();
});

test("a direct message reaches only its recipient, and a forged x-nick does not change the name shown", async () => {
  const alice = await member("alice");
  const bob = await member("bob");
  const carol = await member("carol");
  await alice.page.locator("#presence button.person", { hasText: "bob" }).click();
  await alice.page.locator("#room-title", { hasText: "@ bob" }).waitFor();
  await say(alice.page, "just for bob");
  await chatLine(alice.page, "just for bob").waitFor();
  await bob.page.locator('#dm-list button[data-dm="alice"] .unread', { hasText: "1" }).waitFor();
  await bob.page.click('#dm-list button[data-dm="alice"]');
  await chatLine(bob.page, "just for bob").waitFor();
  await bob.page.screenshot({ path: `${SHOTS}chat-direct-message.png` });
  // Carol sees no conversation and no such line, anywhere.
  await say(carol.page, "carol checks in");
  await chatLine(carol.page, "carol checks in").waitFor();
  assert.equal(await carol.page.locator("#dm-list li").count(), 0);
  assert.equal(await carol.page.getByText("just for bob").count(), 0);

  // Bob, logged in, claims to be alice in x-nick over TCP: the page shows bob.
  const tcp = new TcpStomp(closed.tcpPort);
  await tcp.open();
  tcp.send("CONNECT", { "accept-version": "1.2", host: "localhost", login: "bob", passcode: "bob-pw" });
  await tcp.waitFor((f) => f.command === "CONNECTED", "bob's CONNECTED");
  tcp.send("SEND", { destination: "/topic/chat.team", "x-nick": "alice", "x-sender": "alice", receipt: "forged" }, "I am alice, honest");
  await tcp.waitFor((f) => f.headers["receipt-id"] === "forged", "the receipt");
  tcp.close();
  const forged = chatLine(carol.page, "I am alice, honest");
  await forged.waitFor();
  assert.equal(await forged.locator(".author").textContent(), "bob");
  await carol.page.screenshot({ path: `${SHOTS}chat-verified-names.png` });
  for (const u of [alice, bob, carol]) await u.context.close();
});

test("signing in with a token from the operator's sign-in service, renewed before it expires", async () => {
  const http = await import("node:http");
  const crypto = await import("node:crypto");
  const secret = crypto.randomBytes(32).toString("hex");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "stompbox-token-"));
  fs.writeFileSync(path.join(dir, "secret"), secret);
  const b64 = (x) => Buffer.from(JSON.stringify(x)).toString("base64url");
  let issued = 0;
  let pageOrigin = "";
  // The operator's sign-in service: a session cookie would decide who this
  // is; here everyone is "dana", for 6 seconds at a time.
  const service = http.createServer((req, res) => {
    const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: "dana", exp: Math.floor(Date.now() / 1000) + 6 })}`;
    const token = `${body}.${crypto.createHmac("sha256", secret).update(body).digest("base64url")}`;
    issued += 1;
    res.writeHead(200, {
      "content-type": "application/json",
      "access-control-allow-origin": pageOrigin,
      "access-control-allow-credentials": "true",
    });
    res.end(JSON.stringify({ token }));
  });
  await new Promise((resolve) => service.listen(0, "127.0.0.1", resolve));
  const tokenUrl = `http://127.0.0.1:${service.address().port}/token`;
  const broker = await startBroker({
    args: ["--config", config([
      'anonymous = "never"',
      `chat_token_url = "${tokenUrl}"`,
      "[tokens]",
      `secret_file = "${path.join(dir, "secret")}"`,
    ])],
  });
  pageOrigin = broker.url.replace(/\/$/, "");
  try {
    const { context, page } = await newPage(broker);
    await page.locator("#token-signin").waitFor();
    await page.click("#token-signin");
    await page.locator('#state[data-state="connected"]').waitFor();
    await page.locator("#me", { hasText: "signed in as dana" }).waitFor();
    // Past the first token's expiry, still connected on a renewed one.
    await page.waitForFunction(() => Number(document.body.dataset.tokenRenewals ?? 0) >= 2, null, { timeout: 3 * WAIT });
    assert.equal(await page.locator("#state").getAttribute("data-state"), "connected");
    await say(page, "still here after renewals");
    const line = chatLine(page, "still here after renewals");
    await line.waitFor();
    assert.equal(await line.locator(".author").textContent(), "dana");
    assert.ok(issued >= 3, `tokens issued: ${issued}`);
    await context.close();
  } finally {
    await stopBroker(broker);
    service.close();
  }
});
