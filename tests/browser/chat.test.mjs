// The chat page in real headless Chromium (Debian's /usr/bin/chromium)
// against the real broker, plus @stomp/stompjs and a TCP client talking to it.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { startBroker, stopBroker, TcpStomp, WAIT, launchChromium } from "./broker.mjs";

// The package's UMD bundle (not in its "exports", so located by path).
const STOMPJS = new URL("node_modules/@stomp/stompjs/bundles/stomp.umd.js", import.meta.url).pathname;
const SHOTS = new URL("../../target/browser/", import.meta.url).pathname;

let broker;
let browser;

before(async () => {
  broker = await startBroker();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  if (broker) await stopBroker(broker);
});

/** Opens the chat as a new user (own storage) and joins `room`. */
async function user(nick, room = "general") {
  const context = await browser.newContext({ viewport: { width: 1000, height: 640 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  await page.goto(broker.url);
  await page.fill("#nick", nick);
  await page.fill("#first-room", room);
  await page.click("#login-form button");
  await page.locator('#state[data-state="connected"]').waitFor();
  await page.locator("#login").waitFor({ state: "hidden" });
  return { context, page };
}

const chatLine = (page, text) => page.locator("#messages li[data-kind=chat]", { hasText: text });

async function say(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

async function presenceNames(page) {
  return page.locator("#presence li").allTextContents();
}

let ana;
let bob;

test("two users chat both ways and see each other present", async () => {
  ana = await user("ana");
  bob = await user("bob");
  await say(ana.page, "hello bob");
  await chatLine(bob.page, "hello bob").waitFor();
  await say(bob.page, "hi ana, all good?");
  await chatLine(ana.page, "hi ana, all good?").waitFor();
  // A message ends its author's typing indicator.
  await ana.page.locator("#typing", { hasText: /^$/ }).waitFor();
  await assert.doesNotReject(() => ana.page.waitForFunction(() => document.querySelectorAll("#presence li").length === 2));
  assert.deepEqual(await presenceNames(ana.page), ["ana", "bob"]);
  assert.deepEqual(await presenceNames(bob.page), ["ana", "bob"]);
  assert.equal(await chatLine(ana.page, "hello bob").locator(".author").textContent(), "ana");

  mkdirSync(SHOTS, { recursive: true });
  const shot = `${SHOTS}chat-two-users.png`;
  await ana.page.screenshot({ path: shot });
  console.log(`screenshot of the chat with two users: ${shot}`);
});

test("the page loads without console errors, and a bad room name says why", async () => {
  const context = await browser.newContext({ viewport: { width: 1000, height: 640 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const errors = [];
  page.on("console", (msg) => { if (msg.type() === "error" || msg.type() === "warning") errors.push(msg.text()); });
  page.on("pageerror", (err) => errors.push(String(err)));
  page.on("response", (r) => { if (r.status() >= 400) errors.push(`${r.status()} ${r.url()}`); });
  await page.goto(broker.url, { waitUntil: "networkidle" });
  // A name the login form refuses, with a sentence saying why.
  await page.fill("#nick", "cleo");
  await page.fill("#first-room", "Room With Spaces");
  await page.click("#login-form button");
  await page.locator("#login-error", { hasText: "lower-case letters" }).waitFor();
  assert.equal(await page.locator("#login").isVisible(), true);
  await page.fill("#first-room", "general");
  await page.click("#login-form button");
  await page.locator('#state[data-state="connected"]').waitFor();
  await page.fill("#join-room", "Room With Spaces");
  await page.press("#join-room", "Enter");
  await page.locator("#join-error", { hasText: "no spaces" }).waitFor();
  assert.equal(await page.locator('#room-list button[data-room="room with spaces"]').count(), 0);
  await page.fill("#join-room", "room-with-dashes");
  await page.press("#join-room", "Enter");
  await page.locator('#room-list button[aria-current="true"][data-room="room-with-dashes"]').waitFor();
  assert.equal(await page.locator("#join-error").isVisible(), false);
  const icon = await page.request.get(new URL("/favicon.ico", broker.url).href);
  assert.equal(icon.status(), 200);
  assert.deepEqual(errors, []);
  await context.close();
});

test("unread counts for other rooms, typing indicator", async () => {
  await ana.page.fill("#join-room", "random");
  await ana.page.press("#join-room", "Enter");
  await ana.page.locator('#room-list button[aria-current="true"][data-room="random"]').waitFor();
  await say(bob.page, "ana, are you there?");
  await ana.page.locator('#room-list button[data-room="general"] .unread', { hasText: "1" }).waitFor();
  await ana.page.click('#room-list button[data-room="general"]');
  await chatLine(ana.page, "ana, are you there?").waitFor();
  assert.equal(await ana.page.locator('#room-list button[data-room="general"] .unread').count(), 0);
  await bob.page.type("#text", "typing…");
  await ana.page.locator("#typing", { hasText: "bob is typing" }).waitFor();
  await bob.page.fill("#text", "");
});

test("nicknames and messages with HTML are shown as text", async () => {
  const mallory = await user("<img src=x onerror=pwned=1>");
  await say(mallory.page, "<b>bold</b><script>window.pwned=2</script>");
  const line = chatLine(ana.page, "<b>bold</b>");
  await line.waitFor();
  assert.equal(await line.locator(".text").textContent(), "<b>bold</b><script>window.pwned=2</script>");
  assert.equal(await line.locator(".author").textContent(), "<img src=x onerror=pwned=1>");
  assert.equal(await ana.page.locator("#messages b, #messages img, #messages script").count(), 0);
  assert.equal(await ana.page.evaluate(() => window.pwned), undefined);
  await mallory.context.close();
});

test("keyboard only, at phone width, in dark mode", async () => {
  const context = await browser.newContext({ viewport: { width: 390, height: 760 }, colorScheme: "dark" });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  await page.goto(broker.url);
  // The nickname field has focus on load; Tab moves to the room, Enter joins.
  await page.keyboard.type("dora");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Enter");
  await page.locator('#state[data-state="connected"]').waitFor();
  await page.keyboard.type("typed without a mouse");
  await page.keyboard.press("Enter");
  await chatLine(ana.page, "typed without a mouse").waitFor();
  const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const [r, g, b] = background.match(/\d+/g).map(Number);
  assert.ok(r + g + b < 150, `dark background expected, got ${background}`);
  const composer = await page.locator("#send-form").boundingBox();
  assert.ok(composer.x >= 0 && composer.x + composer.width <= 390, "the composer fits the phone's width");
  const shot = `${SHOTS}chat-phone-dark.png`;
  await page.screenshot({ path: shot });
  console.log(`screenshot at phone width in dark mode: ${shot}`);
  await context.close();
});

test("after a dropped connection, messages sent meanwhile appear once, in order", async () => {
  await ana.page.evaluate(() => window.stompbox.client.ws.close());
  await ana.page.locator('#state[data-state="reconnecting"]').waitFor();
  // Said next to the composer as well as in the header.
  await ana.page.locator("#connection", { hasText: "Connection lost" }).waitFor();
  await say(bob.page, "while you were away 1");
  await say(bob.page, "while you were away 2");
  await ana.page.locator('#state[data-state="connected"]').waitFor();
  await chatLine(ana.page, "while you were away 2").waitFor();
  assert.equal(await ana.page.locator("#connection").isVisible(), false);
  const texts = await ana.page.locator("#messages li[data-kind=chat] .text").allTextContents();
  const away = texts.filter((t) => t.startsWith("while you were away"));
  assert.deepEqual(away, ["while you were away 1", "while you were away 2"]);
  assert.equal(await ana.page.locator("#notice").isVisible(), false, "nothing was missing");
});

test("a message over the room's size limit gets a friendly error and the connection stays", async () => {
  await ana.page.fill("#text", "x".repeat(17 * 1024));
  await ana.page.press("#text", "Enter");
  await ana.page.locator("#send-error", { hasText: "too long" }).waitFor();
  assert.equal(await ana.page.locator("#state").getAttribute("data-state"), "connected");
  // The text is kept for editing, and a normal message still goes through.
  assert.equal((await ana.page.inputValue("#text")).length, 17 * 1024);
  await say(ana.page, "short again");
  await chatLine(bob.page, "short again").waitFor();
});

test("closing a tab makes the others see the leave", async () => {
  await bob.context.close();
  await ana.page.locator("#messages li[data-kind=system]", { hasText: "bob left" }).waitFor();
  await ana.page.waitForFunction(() => ![...document.querySelectorAll("#presence li")].some((li) => li.textContent === "bob"));
});

test("a reload shows the room's history", async () => {
  await ana.page.reload();
  await ana.page.locator('#state[data-state="connected"]').waitFor();
  await chatLine(ana.page, "hi ana, all good?").waitFor();
  assert.ok(await chatLine(ana.page, "hello bob").evaluate((li) => li.classList.contains("history")));
});

test("after a broker restart the room's history is whole and the page says nothing is missing", async () => {
  const { tcpPort, httpPort, dataDir } = broker;
  // The line that was sent last, so a new line after the restart proves order.
  await say(ana.page, "just before the restart");
  await chatLine(ana.page, "just before the restart").waitFor();
  const before = Number(await ana.page.evaluate(() => document.body.dataset.recoveries ?? 0));
  assert.equal(await stopBroker(broker, { keepData: true }), 0);
  await ana.page.locator('#state[data-state="reconnecting"], #state[data-state="offline"]').waitFor();
  broker = await startBroker({ tcpPort, httpPort, dataDir });
  await ana.page.locator('#state[data-state="connected"]').waitFor({ timeout: 3 * WAIT });
  // Recovered with x-since under the same epoch: complete, no notice.
  await ana.page.waitForFunction((n) => Number(document.body.dataset.recoveries ?? 0) > n, before);
  assert.equal(await ana.page.evaluate(() => document.body.dataset.recovery), "complete");
  assert.equal(await ana.page.locator("#notice").isVisible(), false);
  // A newcomer is shown the history kept from before the restart.
  const dave = await user("dave");
  await chatLine(dave.page, "just before the restart").waitFor();
  assert.ok(await chatLine(dave.page, "just before the restart").evaluate((li) => li.classList.contains("history")));
  await dave.context.close();
});

test("after a restart that lost the broker's data the page says history may be missing", async () => {
  const { tcpPort, httpPort } = broker;
  assert.equal(await stopBroker(broker), 0);
  await ana.page.locator('#state[data-state="reconnecting"], #state[data-state="offline"]').waitFor();
  broker = await startBroker({ tcpPort, httpPort });
  await ana.page.locator('#state[data-state="connected"]').waitFor({ timeout: 3 * WAIT });
  const notice = ana.page.locator("#notice");
  await notice.waitFor();
  assert.match(await notice.textContent(), /may be missing/);
  // And the chat works again.
  const carol = await user("carol");
  await say(carol.page, "back online");
  await chatLine(ana.page, "back online").waitFor();
  await carol.context.close();
});

test("@stomp/stompjs, the chat page and a TCP client exchange messages", async () => {
  const tcp = new TcpStomp(broker.tcpPort);
  await tcp.open();
  tcp.send("CONNECT", { "accept-version": "1.2", host: "localhost" });
  await tcp.waitFor((f) => f.command === "CONNECTED", "CONNECTED over TCP");
  tcp.send("SUBSCRIBE", { id: "t", destination: "/topic/chat.general", receipt: "sub" });
  await tcp.waitFor((f) => f.command === "RECEIPT", "the TCP subscription");

  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  await page.goto(`${broker.url}health`);
  await page.addScriptTag({ path: STOMPJS });
  await page.evaluate((url) => {
    window.received = [];
    window.stomp = new StompJs.Client({ brokerURL: url, reconnectDelay: 0 });
    window.stomp.onConnect = () => {
      window.stomp.subscribe("/topic/chat.general", (m) => window.received.push({ body: m.body, nick: m.headers["x-nick"] }));
      window.stompReady = true;
    };
    window.stomp.activate();
  }, `ws://127.0.0.1:${broker.httpPort}/ws`);
  await page.waitForFunction(() => window.stompReady === true);

  await page.evaluate(() => window.stomp.publish({ destination: "/topic/chat.general", body: "hi from stompjs", headers: { "x-nick": "stompjs" } }));
  await chatLine(ana.page, "hi from stompjs").waitFor();
  await tcp.waitFor((f) => f.body === "hi from stompjs", "the stompjs message over TCP");

  await say(ana.page, "hi stompjs, ana here");
  await page.waitForFunction(() => window.received.some((m) => m.body === "hi stompjs, ana here" && m.nick === "ana"));

  tcp.send("SEND", { destination: "/topic/chat.general", "x-nick": "netcat" }, "hello from tcp");
  await chatLine(ana.page, "hello from tcp").waitFor();
  await page.waitForFunction(() => window.received.some((m) => m.body === "hello from tcp"));

  await page.evaluate(() => window.stomp.deactivate());
  tcp.close();
  await context.close();
});

/** A page of another origin (its own HTTP server on another port) tries
 *  the broker's WebSocket: refused, while the broker's own page and a
 *  listed origin get in. */
test("a page from a foreign origin cannot open the broker's WebSocket", async () => {
  const http = await import("node:http");
  const server = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<!doctype html><title>elsewhere</title><p>another site</p>");
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const foreign = `http://127.0.0.1:${server.address().port}/`;
  const tryWebSocket = (page, url) =>
    page.evaluate(
      (url) =>
        new Promise((resolve) => {
          const ws = new WebSocket(url, ["v12.stomp"]);
          ws.onopen = () => {
            ws.close();
            resolve("open");
          };
          ws.onerror = () => resolve("refused");
        }),
      url,
    );
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  try {
    await page.goto(foreign);
    assert.equal(await tryWebSocket(page, `ws://127.0.0.1:${broker.httpPort}/ws`), "refused");
    assert.match(broker.log(), /WebSocket from a page of another origin refused/);
    await page.goto(`${broker.url}health`);
    assert.equal(await tryWebSocket(page, `ws://127.0.0.1:${broker.httpPort}/ws`), "open");

    // Listed in allowed_origins: let in.
    const listed = await startBroker({ args: ["--allowed-origin", foreign.replace(/\/$/, "")] });
    try {
      await page.goto(foreign);
      assert.equal(await tryWebSocket(page, `ws://127.0.0.1:${listed.httpPort}/ws`), "open");
    } finally {
      await stopBroker(listed);
    }
  } finally {
    await context.close();
    server.close();
  }
});
