// The chat page: joining as a guest or logging in, rooms with history that
// loads further back on scrolling up, direct messages between logged-in
// users, presence, typing, recovery after reconnects. Names come from the
// broker's verified `x-sender` when there is one; guests are marked. What
// people typed goes on the page through view.js, never as HTML.

import { StompClient } from "./stomp.js";
import { colorOf, messageElement, separatorBefore } from "./view.js";

const $ = (id) => document.getElementById(id);
const wsUrl = new URL("ws", location.href);
wsUrl.protocol = location.protocol === "https:" ? "wss:" : "ws:";

const ROOM_PATTERN = /^[a-z0-9][a-z0-9_-]{0,31}$/;
const ROOM_RULE = "Room names are 1 to 32 lower-case letters, digits, - and _, starting with a letter or digit (no spaces).";
const ANONYMOUS = "(anonymous)";
const PAGE = 50; // history messages asked for at a time
const KEEP = 2000; // items kept per conversation
// A leave followed by a join of the same person within this long is a
// reload or a reconnect, not news: neither is shown.
const LEAVE_GRACE_MS = 4000;
const TITLE = document.title;

const saved = JSON.parse(localStorage.getItem("stompbox-chat") || "{}");
// A per-browser tag that tells apart two guests who picked the same nickname.
const tag = saved.tag || Math.random().toString(16).slice(2, 6);
const me = { nick: saved.nick || "", login: sessionStorage.getItem("stompbox-login") || null };
let password = null; // in memory only: never stored
let notify = false;
const conversations = new Map(); // key ("room:NAME" or "dm:LOGIN") -> conversation
let active = null;
let pinned = true; // the reader is at the newest message
let dmSubscription = null;
let connectedOnce = false;
// Where the operator's sign-in service hands out tokens (config.json), and
// the timer that fetches a fresh one before the current one expires.
let tokenUrl = null;
let renewTimer = null;

const client = new StompClient(wsUrl.href);
// A handle for the browser console (and the browser tests): window.stompbox.client.
window.stompbox = { client };

function save() {
  const rooms = [...conversations.values()].filter((c) => c.kind === "room").map((c) => c.name);
  localStorage.setItem("stompbox-chat", JSON.stringify({ nick: me.nick, tag, rooms, active }));
  if (me.login) sessionStorage.setItem("stompbox-login", me.login);
  else sessionStorage.removeItem("stompbox-login");
}

/** The name this page shows for the signed-in person. */
function myName() {
  return me.login ?? me.nick;
}

// --- connection state and sign-in -------------------------------------------

client.onstate = (state, detail) => {
  const badge = $("state");
  badge.dataset.state = state;
  badge.textContent =
    state === "connected" ? "connected"
    : state === "reconnecting" && detail?.delay ? `reconnecting in ${Math.ceil(detail.delay / 1000)} s`
    : state === "offline" ? "offline: waiting for the network"
    : state;
  // Next to the composer too: whoever is typing sees that it will not go out.
  const line = $("connection");
  line.textContent =
    state === "reconnecting" ? `Connection lost: ${badge.textContent}. Messages cannot be sent until it is back.`
    : state === "offline" ? "Offline: messages cannot be sent until the network is back."
    : "";
  line.hidden = !line.textContent || !connectedOnce;
  if (state === "connected") {
    connectedOnce = true;
    showLogin(false);
  }
  if (state === "reconnecting" || state === "offline") {
    for (const c of conversations.values()) {
      c.members.clear();
      cancelOlder(c);
    }
    renderPresence();
  }
};

client.onerror = ({ message }) => {
  // Refused at CONNECT: ask for credentials once instead of reconnecting in a loop.
  if (client.state !== "connected" && /^access refused/.test(message)) {
    client.disconnect();
    const wrong = /wrong login/.test(message);
    password = null;
    showLogin(true, wrong ? "Wrong login or password." : "This chat asks you to log in.", wrong ? "" : "needs-login");
    return;
  }
  showNotice(`The broker said: ${message}`);
};

function showLogin(visible, why = "", reason = "") {
  $("login").hidden = !visible;
  $("chat").hidden = visible || conversations.size === 0;
  $("me").hidden = visible;
  if (!visible) return;
  const text = $("login-error");
  text.textContent = why;
  text.hidden = !why;
  if (reason === "needs-login" || me.login) {
    $("account").open = true;
    $("guest-fields").hidden = true;
    $("login-name").value = me.login ?? "";
    $(me.login ? "password" : "login-name").focus();
  }
}

function connect() {
  client.connectHeaders = me.login ? { login: me.login, passcode: password ?? "" } : {};
  client.connect();
  $("me").textContent = me.login ? `signed in as ${me.login}` : `guest: ${me.nick}`;
  $("sign-out").hidden = false;
  if (me.login && !dmSubscription) {
    // Every tab of this login receives its direct messages.
    dmSubscription = client.subscribe("/user/dm", onDirect);
  }
}

// --- conversations -------------------------------------------------------------

function conversation(kind, name) {
  const key = `${kind}:${name}`;
  let c = conversations.get(key);
  if (!c) {
    c = {
      key, kind, name,
      items: [], positions: new Set(), unread: 0,
      members: new Map(), typing: new Map(), notice: "",
      oldest: null, epoch: null, oldestKept: null, older: null,
    };
    conversations.set(key, c);
  }
  return c;
}

function joinRoom(name, focus = true) {
  if (!ROOM_PATTERN.test(name)) return;
  const key = `room:${name}`;
  if (!conversations.has(key)) {
    const c = conversation("room", name);
    c.destination = `/topic/chat.${name}`;
    c.sub = client.subscribe(c.destination, (frame) => onRoomFrame(c, frame), {
      "x-history": String(PAGE),
      "x-presence": myName(),
      "x-presence-meta": JSON.stringify({ tag }),
    });
  }
  if (focus) switchTo(key);
  save();
}

function openDirect(login) {
  if (!me.login || login === me.login) return;
  conversation("dm", login);
  switchTo(`dm:${login}`);
}

function leave() {
  const c = conversations.get(active);
  if (!c) return;
  c.sub?.unsubscribe();
  cancelOlder(c);
  conversations.delete(c.key);
  const next = [...conversations.keys()][0] ?? null;
  if (next) switchTo(next);
  else {
    active = null;
    $("room-title").textContent = "No room: join one on the left";
    $("messages").replaceChildren();
    renderLists();
    renderPresence();
  }
  save();
}

function switchTo(key) {
  active = key;
  const c = conversations.get(key);
  c.unread = 0;
  $("room-title").textContent = c.kind === "room" ? `# ${c.name}` : `@ ${c.name}`;
  $("leave").textContent = c.kind === "room" ? "Leave" : "Close";
  renderLists();
  renderMessages();
  renderPresence();
  renderTyping();
  showNotice(c.notice);
  save();
}

// --- what arrives --------------------------------------------------------------

/** Who sent a frame, as shown: the broker's verified login, or a guest's nickname. */
function authorOf(c, headers) {
  const sender = headers["x-sender"];
  if (sender && sender !== ANONYMOUS) return { author: sender, guest: false };
  const nick = headers["x-nick"] || "guest";
  const tagged = headers["x-nick-tag"];
  return { author: displayGuest(c, nick, tagged), guest: true };
}

/** A guest's nickname, with its tag when another guest in the room shares it. */
function displayGuest(c, nick, guestTag) {
  if (!guestTag) return nick;
  c.tags ??= new Map();
  const tags = c.tags.get(nick) ?? new Set();
  tags.add(guestTag);
  c.tags.set(nick, tags);
  return tags.size > 1 ? `${nick} #${guestTag}` : nick;
}

function onRoomFrame(c, frame) {
  const h = frame.headers;
  const event = h["x-presence-event"];
  if (event) return onPresence(c, event, frame.body);
  if (h["x-recovery"]) {
    // The last recovery's result, for whoever inspects the page (tests, curious users).
    document.body.dataset.recovery = h["x-recovery"];
    document.body.dataset.recoveries = String(Number(document.body.dataset.recoveries ?? 0) + 1);
    c.notice = h["x-recovery"] === "gap" && c.connectedBefore
      ? "Some messages may be missing: the broker restarted or no longer had them."
      : "";
    c.connectedBefore = true;
    if (c.epoch !== h["x-stream-epoch"]) {
      // Another stream: older history is asked for by its positions only.
      c.epoch = h["x-stream-epoch"];
      c.oldest = null;
      for (const item of c.items) {
        if (item.epoch === c.epoch && item.position !== null && (c.oldest === null || item.position < c.oldest)) c.oldest = item.position;
      }
    }
    c.oldestKept = Number(h["x-history-oldest"] ?? 1);
    if (c.key === active) showNotice(c.notice);
    return;
  }
  if (h["x-kind"] === "typing") {
    const { author } = authorOf(c, h);
    if (author === myName()) return;
    clearTimeout(c.typing.get(author));
    c.typing.set(author, setTimeout(() => { c.typing.delete(author); if (c.key === active) renderTyping(); }, 3000));
    if (c.key === active) renderTyping();
    return;
  }
  const item = chatItem(c, frame);
  if (!item) return;
  if (c.typing.has(item.author)) {
    clearTimeout(c.typing.get(item.author));
    c.typing.delete(item.author);
    if (c.key === active) renderTyping();
  }
  addItem(c, item);
}

/** A chat line from a MESSAGE, or null for one already shown. */
function chatItem(c, frame) {
  const h = frame.headers;
  const position = h["x-stream-position"] !== undefined ? Number(h["x-stream-position"]) : null;
  if (position !== null) {
    // Positions count again from 1 in a new epoch (a broker that lost its data).
    const key = `${h["x-stream-epoch"]}:${position}`;
    if (c.positions.has(key)) return null;
    c.positions.add(key);
    if (h["x-stream-epoch"] === c.epoch && (c.oldest === null || position < c.oldest)) c.oldest = position;
  }
  const sent = Number(h["x-sent-at"]);
  const { author, guest } = authorOf(c, h);
  const text = frame.body;
  return {
    kind: "chat", author, guest, text, position, epoch: h["x-stream-epoch"],
    time: Number.isFinite(sent) && sent > 0 ? new Date(sent) : new Date(),
    history: h["x-history"] === "true",
    mention: author !== myName() && mentions(text),
  };
}

function mentions(text) {
  const name = myName();
  return Boolean(name) && text.toLowerCase().includes(`@${name.toLowerCase()}`);
}

function onDirect(frame) {
  const h = frame.headers;
  const sender = h["x-sender"];
  if (!sender || sender === ANONYMOUS) return;
  // My own copy of what I sent from another tab says whom it was for.
  const peer = sender === me.login ? h["x-dm-to"] : sender;
  if (!peer) return;
  const c = conversation("dm", peer);
  const sent = Number(h["x-sent-at"]);
  addItem(c, {
    kind: "chat", author: sender, guest: false, text: frame.body, position: null,
    time: Number.isFinite(sent) && sent > 0 ? new Date(sent) : new Date(),
    history: false, mention: sender !== me.login,
  });
  renderLists();
}

/** Who a presence entry is, as shown, and whether they can be sent a direct message. */
function memberName(c, m) {
  if (m.login && m.login !== ANONYMOUS) return { name: m.login, guest: false };
  let memberTag;
  try {
    memberTag = JSON.parse(m.meta || "{}").tag;
  } catch {
    memberTag = undefined;
  }
  return { name: displayGuest(c, m.name, memberTag), guest: true };
}

function onPresence(c, event, body) {
  let data;
  try {
    data = JSON.parse(body);
  } catch {
    return;
  }
  c.pendingLeaves ??= new Map();
  if (event === "snapshot") {
    c.members = new Map(data.map((m) => [m.id, m]));
  } else if (event === "join") {
    c.members.set(data.id, data);
    const { name } = memberName(c, data);
    const pending = c.pendingLeaves.get(name);
    if (pending) {
      // Back within the grace: a reload or a reconnect, not a leave and a join.
      clearTimeout(pending);
      c.pendingLeaves.delete(name);
      notePending();
    } else {
      addItem(c, { kind: "system", text: `${name} joined`, time: new Date() });
    }
  } else if (event === "leave") {
    c.members.delete(data.id);
    const { name } = memberName(c, data);
    const stillHere = [...c.members.values()].some((m) => memberName(c, m).name === name);
    if (!stillHere) {
      clearTimeout(c.pendingLeaves.get(name));
      c.pendingLeaves.set(name, setTimeout(() => {
        c.pendingLeaves.delete(name);
        notePending();
        addItem(c, { kind: "system", text: `${name} left`, time: new Date() });
      }, LEAVE_GRACE_MS));
      notePending();
    }
  }
  if (c.key === active) renderPresence();
}

/** How many leaves wait out their grace, for whoever inspects the page (tests). */
function notePending() {
  let n = 0;
  for (const c of conversations.values()) n += c.pendingLeaves?.size ?? 0;
  document.body.dataset.pendingLeaves = String(n);
}

function addItem(c, item) {
  c.items.push(item);
  if (c.items.length > KEEP) c.items.shift();
  if (c.key === active) {
    appendMessage(item, c.items.at(-2));
  }
  if (c.key !== active && item.kind === "chat" && !item.history) {
    c.unread += 1;
    renderLists();
  }
  if (item.mention && !item.history && (document.hidden || c.key !== active)) notifyMention(c, item);
}

function notifyMention(c, item) {
  if (!notify || typeof Notification === "undefined" || Notification.permission !== "granted") return;
  const where = c.kind === "room" ? `#${c.name}` : "a direct message";
  new Notification(`${item.author} in ${where}`, { body: item.text.slice(0, 200), tag: c.key });
}

// --- older history, on scrolling up ---------------------------------------------

function loadOlder(c) {
  if (c.kind !== "room" || c.older || c.oldest === null || c.epoch === null) return;
  if (c.oldestKept !== null && c.oldest <= c.oldestKept) return;
  const batch = [];
  c.older = client.subscribe(c.destination, (frame) => {
    const h = frame.headers;
    if (h["x-recovery"] !== undefined) {
      cancelOlder(c);
      if (h["x-recovery"] === "complete") c.oldestKept = Number(h["x-history-oldest"] ?? c.oldestKept);
      prepend(c, batch);
      return;
    }
    // Live messages reach this page through the room's own subscription.
    if (h["x-history"] !== "true" || h["x-kind"] === "typing") return;
    const item = chatItem(c, frame);
    if (item) batch.push(item);
  }, { "x-history-before": String(c.oldest), "x-since-epoch": c.epoch, "x-history": String(PAGE) });
}

function cancelOlder(c) {
  c.older?.unsubscribe();
  c.older = null;
}

function prepend(c, batch) {
  if (batch.length === 0) {
    c.oldestKept = c.oldest;
    return;
  }
  c.items = [...batch, ...c.items].slice(-KEEP);
  if (c.key !== active) return;
  // Keep the reader's place: what was on screen stays where it was.
  const list = $("messages");
  const fromBottom = list.scrollHeight - list.scrollTop;
  renderMessages(false);
  list.scrollTop = list.scrollHeight - fromBottom;
}

// --- drawing -----------------------------------------------------------------

function appendMessage(item, previous) {
  const list = $("messages");
  // Where the reader is now, not as of the last scroll event (which comes
  // a frame late): at the bottom, the list follows; above it, a button says so.
  pinned = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const separator = separatorBefore(item, previous);
  if (separator) list.append(separator);
  list.append(messageElement(item));
  if (pinned) list.scrollTop = list.scrollHeight;
  else if (item.kind === "chat") $("new-below").hidden = false;
}

function renderMessages(toBottom = true) {
  const list = $("messages");
  const c = conversations.get(active);
  const nodes = [];
  let previous = null;
  for (const item of c?.items ?? []) {
    const separator = separatorBefore(item, previous);
    if (separator) nodes.push(separator);
    nodes.push(messageElement(item));
    previous = item;
  }
  list.replaceChildren(...nodes);
  if (toBottom) {
    list.scrollTop = list.scrollHeight;
    pinned = true;
    $("new-below").hidden = true;
  }
}

function entry(c, label) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.dataset[c.kind === "room" ? "room" : "dm"] = c.name;
  if (c.key === active) button.setAttribute("aria-current", "true");
  const text = document.createElement("span");
  text.textContent = label;
  button.append(text);
  if (c.unread > 0) {
    const badge = document.createElement("span");
    badge.className = "unread";
    badge.textContent = String(c.unread);
    badge.setAttribute("aria-label", `${c.unread} unread`);
    button.append(badge);
  }
  button.addEventListener("click", () => switchTo(c.key));
  li.append(button);
  return li;
}

function renderLists() {
  const all = [...conversations.values()];
  $("room-list").replaceChildren(...all.filter((c) => c.kind === "room").map((c) => entry(c, `# ${c.name}`)));
  $("dm-list").replaceChildren(...all.filter((c) => c.kind === "dm").map((c) => entry(c, `@ ${c.name}`)));
  const unread = all.reduce((n, c) => n + c.unread, 0);
  document.title = unread > 0 ? `(${unread}) ${TITLE}` : TITLE;
}

function renderPresence() {
  const list = $("presence");
  const c = conversations.get(active);
  const people = new Map();
  if (c?.kind === "room") {
    for (const m of c.members.values()) {
      const who = memberName(c, m);
      people.set(who.name, who);
    }
  } else if (c?.kind === "dm") {
    people.set(c.name, { name: c.name, guest: false });
    people.set(me.login, { name: me.login, guest: false });
  }
  const sorted = [...people.values()].sort((a, b) => a.name.localeCompare(b.name));
  list.replaceChildren(...sorted.map((who) => {
    const li = document.createElement("li");
    li.style.color = colorOf(who.name);
    if (who.guest) {
      li.classList.add("guest");
      li.title = "a guest: not logged in, so the name is not verified";
    }
    if (!who.guest && me.login && who.name !== me.login) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "person";
      b.textContent = who.name;
      b.title = `Send ${who.name} a direct message`;
      b.addEventListener("click", () => openDirect(who.name));
      li.append(b);
    } else {
      li.textContent = who.name;
    }
    return li;
  }));
  $("people-toggle").textContent = `People (${sorted.length})`;
}

function renderTyping() {
  const c = conversations.get(active);
  const who = [...(c?.typing.keys() ?? [])];
  $("typing").textContent =
    who.length === 0 ? "" : who.length === 1 ? `${who[0]} is typing…` : `${who.join(", ")} are typing…`;
}

function showNotice(text) {
  const n = $("notice");
  n.textContent = text;
  n.hidden = !text;
}

function showSendError(text) {
  const e = $("send-error");
  e.textContent = text;
  e.hidden = !text;
}

/** Shows `text` in the error line `id` (empty hides it); says whether there was an error. */
function showFormError(id, text) {
  const e = $(id);
  e.textContent = text;
  e.hidden = !text;
  return Boolean(text);
}

// --- what the reader does ------------------------------------------------------

$("messages").addEventListener("scroll", () => {
  const list = $("messages");
  pinned = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  if (pinned) $("new-below").hidden = true;
  const c = conversations.get(active);
  if (c && list.scrollTop < 80) loadOlder(c);
});

$("new-below").addEventListener("click", () => {
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
  pinned = true;
  $("new-below").hidden = true;
});

let lastTyping = 0;
$("text").addEventListener("input", () => {
  const now = Date.now();
  const c = conversations.get(active);
  if (!c || c.kind !== "room" || now - lastTyping < 2000) return;
  lastTyping = now;
  client.fire(c.destination, "", { "x-ephemeral": "true", "x-kind": "typing", "x-nick": myName(), "x-nick-tag": tag });
});

$("send-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("text");
  const text = input.value.trim();
  const c = conversations.get(active);
  if (!text || !c) return;
  showSendError("");
  const headers = {
    "content-type": "text/plain;charset=utf-8",
    "x-nick": myName(),
    "x-nick-tag": tag,
    "x-sent-at": String(Date.now()),
  };
  try {
    input.value = "";
    lastTyping = 0;
    if (c.kind === "room") {
      await client.send(c.destination, text, headers);
    } else {
      await client.send(`/user/${c.name}/dm`, text, headers);
      // My other tabs see it too, and this one through the same path.
      await client.send(`/user/${me.login}/dm`, text, { ...headers, "x-dm-to": c.name });
    }
  } catch (e) {
    input.value = text;
    showSendError(
      e.code === "too-large" ? "That message is too long to send."
      : e.code === "rate-limited" ? "You are sending too fast; wait a moment."
      : e.code === "offline" ? "Not connected to the broker; the message was not sent."
      : `Not sent: ${e.message}`,
    );
  }
});

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("join-room").value.trim().toLowerCase();
  if (!name) return;
  if (showFormError("join-error", ROOM_PATTERN.test(name) ? "" : ROOM_RULE)) {
    $("join-room").focus();
    return;
  }
  joinRoom(name);
  $("join-room").value = "";
});

$("leave").addEventListener("click", leave);

// The room directory: the broker lists the rooms that exist (and that
// this login may read) once per subscription; asking again refreshes it.
$("browse").addEventListener("click", () => {
  const list = $("directory");
  if (!list.hidden) {
    list.hidden = true;
    $("browse").setAttribute("aria-expanded", "false");
    return;
  }
  const sub = client.subscribe("/sys/rooms", (frame) => {
    sub.unsubscribe();
    let rooms = [];
    try {
      rooms = JSON.parse(frame.body);
    } catch {
      rooms = [];
    }
    const entries = rooms.filter((r) => ROOM_PATTERN.test(r.name)).map((r) => {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.room = r.name;
      const name = document.createElement("span");
      name.textContent = `# ${r.name}`;
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = String(r.subscribers);
      count.setAttribute("aria-label", `${r.subscribers} here`);
      b.append(name, count);
      b.addEventListener("click", () => joinRoom(r.name));
      li.append(b);
      return li;
    });
    if (entries.length === 0) {
      const li = document.createElement("li");
      li.textContent = "No rooms yet: join one by name above.";
      entries.push(li);
    }
    list.replaceChildren(...entries);
    list.hidden = false;
    $("browse").setAttribute("aria-expanded", "true");
  });
});

$("people-toggle").addEventListener("click", () => {
  const open = $("people").classList.toggle("open");
  $("people-toggle").setAttribute("aria-expanded", String(open));
});

$("notify").addEventListener("click", async () => {
  if (typeof Notification === "undefined") return;
  notify = (await Notification.requestPermission()) === "granted";
  $("notify").textContent = notify ? "Notifying when mentioned" : "Notifications are blocked";
});

$("sign-out").addEventListener("click", () => {
  client.disconnect();
  me.login = null;
  password = null;
  sessionStorage.removeItem("stompbox-login");
  localStorage.removeItem("stompbox-chat");
  location.reload();
});

function start(rooms, focus) {
  $("login").hidden = true;
  $("chat").hidden = false;
  connect();
  for (const r of rooms) joinRoom(r, false);
  const first = focus && rooms.includes(focus) ? focus : rooms[0];
  if (first) switchTo(`room:${first}`);
  $("text").focus();
}

/** A token from the operator's sign-in service, with who it is for and until when. */
async function fetchToken() {
  const response = await fetch(tokenUrl, { credentials: "include" });
  if (!response.ok) throw new Error(`the sign-in service answered HTTP ${response.status}`);
  const text = await response.text();
  let token;
  try {
    token = JSON.parse(text).token;
  } catch {
    token = text.trim();
  }
  const payload = typeof token === "string" ? token.split(".")[1] : undefined;
  if (!payload) throw new Error("the sign-in service sent no token");
  const claims = JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/")));
  return { token, sub: String(claims.sub ?? ""), exp: Number(claims.exp) };
}

/** Fetches a fresh token at four fifths of this one's life and hands it to the broker. */
function scheduleRenewal(exp) {
  clearTimeout(renewTimer);
  const left = exp * 1000 - Date.now();
  renewTimer = setTimeout(async () => {
    try {
      const t = await fetchToken();
      password = t.token;
      client.connectHeaders = { login: me.login, passcode: t.token };
      scheduleRenewal(t.exp);
      if (client.state === "connected") await client.send("/sys/token", t.token);
      document.body.dataset.tokenRenewals = String(Number(document.body.dataset.tokenRenewals ?? 0) + 1);
    } catch (e) {
      showNotice(`Could not renew the sign-in: ${e.message}`);
    }
  }, Math.max(1000, left * 0.8));
}

$("token-signin").addEventListener("click", async () => {
  const room = $("first-room").value.trim().toLowerCase();
  if (showFormError("login-error", ROOM_PATTERN.test(room) ? "" : ROOM_RULE)) return;
  try {
    const t = await fetchToken();
    if (!t.sub) throw new Error("the token names nobody (no sub)");
    me.login = t.sub;
    password = t.token;
    scheduleRenewal(t.exp);
  } catch (e) {
    showFormError("login-error", `Could not sign in: ${e.message}`);
    return;
  }
  if (conversations.size > 0) connect();
  else start([room], room);
});

fetch("config.json")
  .then((r) => (r.ok ? r.json() : {}))
  .then((c) => {
    tokenUrl = typeof c.token_url === "string" ? c.token_url : null;
    $("token-signin").hidden = !tokenUrl;
  })
  .catch(() => {});

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const room = $("first-room").value.trim().toLowerCase();
  const login = $("account").open ? $("login-name").value.trim() : "";
  if (login) {
    me.login = login;
    password = $("password").value;
  } else {
    me.login = null;
    me.nick = $("nick").value.trim();
  }
  const problem =
    !login && !me.nick ? ($("account").open ? "Enter your login and password." : "Pick a nickname first.")
    : ROOM_PATTERN.test(room) ? "" : ROOM_RULE;
  if (showFormError("login-error", problem)) return;
  if (conversations.size > 0) {
    // Signing in again after a refusal: the rooms are already joined.
    connect();
    return;
  }
  start([room], room);
});

const savedRooms = Array.isArray(saved.rooms) ? saved.rooms.filter((r) => ROOM_PATTERN.test(r)) : [];
const savedActive = typeof saved.active === "string" ? saved.active.replace(/^room:/, "") : null;
if ((me.nick || me.login) && savedRooms.length > 0 && !me.login) {
  start(savedRooms, savedActive);
} else {
  $("state").textContent = "not connected";
  $("nick").value = me.nick;
  if (me.login) showLogin(true, "", "needs-login");
}
