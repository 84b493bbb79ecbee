// The chat page: nickname, rooms with unread counts, history, presence,
// typing indicator, recovery after reconnects. Everything a user typed is
// put on the page with textContent, never as HTML.

import { StompClient } from "./stomp.js";

const $ = (id) => document.getElementById(id);
const wsUrl = new URL("ws", location.href);
wsUrl.protocol = location.protocol === "https:" ? "wss:" : "ws:";

const ROOM_PATTERN = /^[a-z0-9][a-z0-9_-]{0,31}$/;
// Nickname colours are CSS variables so light and dark themes each get readable ones.
const COLORS = [0, 1, 2, 3, 4, 5].map((i) => `var(--nick-${i})`);

const saved = JSON.parse(localStorage.getItem("stompbox-chat") || "{}");
let nick = saved.nick || "";
const rooms = new Map(); // name -> room state
let active = null;

const client = new StompClient(wsUrl.href);
// A handle for the browser console (and the browser tests): window.stompbox.client.
window.stompbox = { client };

client.onstate = (state, detail) => {
  const badge = $("state");
  badge.dataset.state = state;
  badge.textContent =
    state === "connected" ? "connected"
    : state === "reconnecting" && detail?.delay ? `reconnecting in ${Math.ceil(detail.delay / 1000)} s`
    : state === "offline" ? "offline: waiting for the network"
    : state;
  if (state === "reconnecting" || state === "offline") {
    for (const room of rooms.values()) room.members.clear();
    renderPresence();
  }
};

client.onerror = ({ message }) => showNotice(`The broker said: ${message}`);

function colorOf(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + c.codePointAt(0)) >>> 0;
  return COLORS[h % COLORS.length];
}

function save() {
  localStorage.setItem("stompbox-chat", JSON.stringify({ nick, rooms: [...rooms.keys()], active }));
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

function joinRoom(name, focus = true) {
  if (!ROOM_PATTERN.test(name)) return;
  if (!rooms.has(name)) {
    const room = {
      name,
      destination: `/topic/chat.${name}`,
      items: [], // { kind, author, text, time, history }
      unread: 0,
      members: new Map(),
      typing: new Map(),
      notice: "",
    };
    rooms.set(name, room);
    room.sub = client.subscribe(room.destination, (frame) => onFrame(room, frame), {
      "x-history": "50",
      "x-presence": nick,
      "x-presence-meta": JSON.stringify({ color: COLORS.indexOf(colorOf(nick)) }),
    });
  }
  if (focus) switchTo(name);
  save();
}

function switchTo(name) {
  active = name;
  const room = rooms.get(name);
  room.unread = 0;
  $("room-title").textContent = `# ${name}`;
  renderRooms();
  renderMessages();
  renderPresence();
  renderTyping();
  showNotice(room.notice);
  save();
}

function onFrame(room, frame) {
  const h = frame.headers;
  const event = h["x-presence-event"];
  if (event) return onPresence(room, event, frame.body);
  if (h["x-recovery"]) {
    // The last recovery's result, for whoever inspects the page (tests, curious users).
    document.body.dataset.recovery = h["x-recovery"];
    document.body.dataset.recoveries = String(Number(document.body.dataset.recoveries ?? 0) + 1);
    room.notice = h["x-recovery"] === "gap" && room.connectedBefore
      ? "Some messages may be missing: the broker restarted or no longer had them."
      : "";
    room.connectedBefore = true;
    if (room.name === active) showNotice(room.notice);
    return;
  }
  if (h["x-kind"] === "typing") {
    const who = h["x-nick"];
    if (!who || who === nick) return;
    clearTimeout(room.typing.get(who));
    room.typing.set(who, setTimeout(() => { room.typing.delete(who); if (room.name === active) renderTyping(); }, 3000));
    if (room.name === active) renderTyping();
    return;
  }
  const author = h["x-nick"] || "(anonymous)";
  if (room.typing.has(author)) {
    clearTimeout(room.typing.get(author));
    room.typing.delete(author);
    if (room.name === active) renderTyping();
  }
  const sent = Number(h["x-sent-at"]);
  addItem(room, {
    kind: "chat",
    author,
    text: frame.body,
    time: Number.isFinite(sent) && sent > 0 ? new Date(sent) : new Date(),
    history: h["x-history"] === "true",
  });
}

function onPresence(room, event, body) {
  let data;
  try {
    data = JSON.parse(body);
  } catch {
    return;
  }
  if (event === "snapshot") {
    room.members = new Map(data.map((m) => [m.id, m]));
  } else if (event === "join") {
    room.members.set(data.id, data);
    addItem(room, { kind: "system", text: `${data.name} joined`, time: new Date() });
  } else if (event === "leave") {
    room.members.delete(data.id);
    addItem(room, { kind: "system", text: `${data.name} left`, time: new Date() });
  }
  if (room.name === active) renderPresence();
}

function addItem(room, item) {
  room.items.push(item);
  if (room.items.length > 500) room.items.shift();
  if (room.name === active) {
    appendMessage(item);
  } else if (item.kind === "chat" && !item.history) {
    room.unread += 1;
    renderRooms();
  }
}

function appendMessage(item) {
  const list = $("messages");
  const li = document.createElement("li");
  li.dataset.kind = item.kind;
  if (item.history) li.classList.add("history");
  const time = document.createElement("time");
  time.dateTime = item.time.toISOString();
  time.textContent = item.time.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  li.append(time);
  if (item.kind === "system") {
    li.classList.add("system");
    li.append(document.createTextNode(item.text));
  } else {
    const author = document.createElement("span");
    author.className = "author";
    author.style.color = colorOf(item.author);
    author.textContent = item.author;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = item.text;
    li.append(author, text);
  }
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(li);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function renderMessages() {
  $("messages").replaceChildren();
  for (const item of rooms.get(active).items) appendMessage(item);
}

function renderRooms() {
  const list = $("room-list");
  list.replaceChildren();
  for (const room of rooms.values()) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.room = room.name;
    if (room.name === active) button.setAttribute("aria-current", "true");
    const label = document.createElement("span");
    label.textContent = `# ${room.name}`;
    button.append(label);
    if (room.unread > 0) {
      const badge = document.createElement("span");
      badge.className = "unread";
      badge.textContent = String(room.unread);
      badge.setAttribute("aria-label", `${room.unread} unread`);
      button.append(badge);
    }
    button.addEventListener("click", () => switchTo(room.name));
    li.append(button);
    list.append(li);
  }
}

function renderPresence() {
  const list = $("presence");
  list.replaceChildren();
  const room = rooms.get(active);
  if (!room) return;
  const names = [...room.members.values()].sort((a, b) => a.name.localeCompare(b.name));
  for (const m of names) {
    const li = document.createElement("li");
    li.textContent = m.name;
    li.style.color = colorOf(m.name);
    list.append(li);
  }
}

function renderTyping() {
  const room = rooms.get(active);
  const who = [...room.typing.keys()];
  $("typing").textContent =
    who.length === 0 ? "" : who.length === 1 ? `${who[0]} is typing…` : `${who.join(", ")} are typing…`;
}

let lastTyping = 0;
$("text").addEventListener("input", () => {
  const now = Date.now();
  if (!active || now - lastTyping < 2000) return;
  lastTyping = now;
  client.fire(rooms.get(active).destination, "", { "x-ephemeral": "true", "x-kind": "typing", "x-nick": nick });
});

$("send-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("text");
  const text = input.value.trim();
  if (!text || !active) return;
  showSendError("");
  try {
    input.value = "";
    lastTyping = 0;
    await client.send(rooms.get(active).destination, text, {
      "content-type": "text/plain;charset=utf-8",
      "x-nick": nick,
      "x-sent-at": String(Date.now()),
    });
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

const ROOM_RULE = "Room names are 1 to 32 lower-case letters, digits, - and _, starting with a letter or digit (no spaces).";

/** Shows `text` in the error line `id` (empty hides it); says whether there was an error. */
function showFormError(id, text) {
  const e = $(id);
  e.textContent = text;
  e.hidden = !text;
  return Boolean(text);
}

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

function start(rooms_, focus) {
  $("login").hidden = true;
  $("chat").hidden = false;
  client.connect();
  for (const r of rooms_) joinRoom(r, false);
  switchTo(focus && rooms.has(focus) ? focus : rooms_[0]);
  $("text").focus();
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  nick = $("nick").value.trim();
  const room = $("first-room").value.trim().toLowerCase();
  const problem = !nick ? "Pick a nickname first." : ROOM_PATTERN.test(room) ? "" : ROOM_RULE;
  if (showFormError("login-error", problem)) return;
  start([room], room);
});

if (nick && Array.isArray(saved.rooms) && saved.rooms.length > 0) {
  start(saved.rooms.filter((r) => ROOM_PATTERN.test(r)), saved.active);
} else {
  $("state").textContent = "not connected";
  $("nick").value = nick;
}
