// The admin page: the management API every two seconds, and a STOMP
// console over the broker's WebSocket. Data is put into the page with
// textContent only, never as HTML.

const $ = (id) => document.getElementById(id);
const POLL_MS = 2000;
const SAMPLES = 60;

let auth = sessionStorage.getItem("stompbox-admin-auth");
let timer = null;
let wsUrl = null;
const history = { waiting: [], rate: [], lastPublished: null, lastAt: null };

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { Authorization: auth, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (response.status === 401) {
    signOut("Wrong token or credentials.");
    throw new Error(json.error);
  }
  if (!response.ok) throw new Error(json.error ?? `HTTP ${response.status}`);
  return json;
}

function signOut(message = "") {
  auth = null;
  sessionStorage.removeItem("stompbox-admin-auth");
  clearInterval(timer);
  timer = null;
  $("dashboard").hidden = true;
  $("signin").hidden = false;
  $("signout").hidden = true;
  $("status").textContent = "not signed in";
  $("signin-error").textContent = message;
}

async function signIn() {
  try {
    await refresh();
  } catch {
    return;
  }
  sessionStorage.setItem("stompbox-admin-auth", auth);
  $("signin").hidden = true;
  $("dashboard").hidden = false;
  $("signout").hidden = false;
  $("signin-error").textContent = "";
  timer = setInterval(() => refresh().catch((e) => ($("status").textContent = e.message)), POLL_MS);
}

$("signin").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  if (token) {
    auth = `Bearer ${token}`;
  } else {
    // btoa takes Latin-1: encode UTF-8 first.
    const pair = new TextEncoder().encode(`${$("login").value}:${$("password").value}`);
    auth = `Basic ${btoa(String.fromCharCode(...pair))}`;
  }
  signIn();
});
$("signout").addEventListener("click", () => signOut());

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.append(td);
  return td;
}

function button(label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function spark(svg, values) {
  const max = Math.max(1, ...values);
  const step = 300 / (SAMPLES - 1);
  const points = values.map((v, i) => `${(i + SAMPLES - values.length) * step},${58 - (v / max) * 56}`).join(" ");
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points);
  const label = document.createElementNS("http://www.w3.org/2000/svg", "title");
  label.textContent = `now ${values.at(-1) ?? 0}, highest ${max}`;
  svg.replaceChildren(label, line);
}

function push(list, value) {
  list.push(value);
  if (list.length > SAMPLES) list.shift();
}

// The outcome of the last action stays in view (the status line is
// rewritten by every refresh).
async function act(what, call) {
  const notice = $("notice");
  try {
    const result = await call();
    notice.textContent = `${what}: ${JSON.stringify(result)}`;
    notice.classList.remove("error");
  } catch (e) {
    notice.textContent = `${what} failed: ${e.message}`;
    notice.classList.add("error");
  }
  await refresh().catch(() => {});
}

async function peek(name) {
  const { messages } = await api("GET", `/api/queues/${encodeURIComponent(name)}/messages?count=20`);
  $("peeked-title").textContent = `Next ${messages.length} waiting in /queue/${name}`;
  $("peeked-list").replaceChildren(
    ...messages.map((m) => {
      const li = document.createElement("li");
      li.textContent = `${m.message_id} (priority ${m.priority}): ${m.body}`;
      return li;
    }),
  );
  $("peeked").hidden = false;
}

async function refresh() {
  const [overview, destinations, connections, exchanges] = await Promise.all([
    api("GET", "/api/overview"),
    api("GET", "/api/destinations"),
    api("GET", "/api/connections"),
    api("GET", "/api/exchanges"),
  ]);
  wsUrl = overview.ws_url;
  $("status").textContent = `signed in · stompbox ${overview.version} · up ${overview.uptime_secs} s`;
  const cards = [
    ["Connections", overview.connections],
    ["Queues", overview.queues],
    ["Topics", overview.topics],
    ["Waiting", overview.messages_waiting],
    ["Unacked", overview.messages_unacked],
    ["Memory", `${Math.round(overview.memory_used / 1024)} KiB`],
  ];
  $("overview").replaceChildren(
    ...cards.map(([name, value]) => {
      const div = document.createElement("div");
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = String(value);
      dd.dataset.card = name.toLowerCase();
      div.append(dt, dd);
      return div;
    }),
  );
  const now = Date.now();
  push(history.waiting, overview.messages_waiting);
  if (history.lastAt !== null) {
    const rate = Math.max(0, (overview.published - history.lastPublished) / ((now - history.lastAt) / 1000));
    push(history.rate, Math.round(rate));
  }
  history.lastPublished = overview.published;
  history.lastAt = now;
  spark($("chart-waiting"), history.waiting);
  spark($("chart-rate"), history.rate);

  fill(
    $("queues").tBodies[0],
    destinations.queues.map((q) => {
      const row = document.createElement("tr");
      const short = q.name.replace(/^\/queue\//, "");
      row.dataset.queue = q.name;
      cell(row, q.name);
      cell(row, q.messages).dataset.field = "messages";
      cell(row, q.bytes);
      cell(row, q.consumers);
      cell(row, q.unacked);
      cell(row, q.publish_rate);
      cell(row, q.deliver_rate);
      cell(row, q.published);
      cell(row, q.delivered);
      cell(row, Object.values(q.dead).reduce((a, b) => a + b, 0));
      cell(row, q.policy);
      const actions = cell(row, "");
      actions.append(
        button("Peek", () => peek(short).catch((e) => ($("status").textContent = e.message))),
        button("Purge", () => {
          if (confirm(`Drop the ${q.messages} waiting messages of ${q.name}?`)) {
            act(`purge ${q.name}`, () => api("POST", `/api/queues/${encodeURIComponent(short)}/purge`));
          }
        }),
        button("Move back", () => act(`move back ${q.name}`, () => api("POST", `/api/queues/${encodeURIComponent(short)}/move-back`, { count: 100 }))),
        button("Delete", () => {
          if (confirm(`Delete ${q.name} and its ${q.messages} waiting messages?`)) {
            act(`delete ${q.name}`, () => api("DELETE", `/api/queues/${encodeURIComponent(short)}`));
          }
        }),
      );
      return row;
    }),
  );
  fill(
    $("topics").tBodies[0],
    destinations.topics.map((t) => {
      const row = document.createElement("tr");
      cell(row, t.name);
      cell(row, t.subscribers);
      cell(row, t.publish_rate);
      cell(row, t.published);
      cell(row, t.delivered);
      cell(row, t.dropped);
      cell(row, t.policy?.pattern ?? "");
      const short = t.name.replace(/^\/topic\//, "");
      row.dataset.topic = t.name;
      cell(row, "").append(
        button("Purge history", () => {
          if (confirm(`Drop the history kept for ${t.name}?`)) {
            act(`purge ${t.name}`, () => api("POST", `/api/topics/${encodeURIComponent(short)}/purge`));
          }
        }),
        button("Delete", () => {
          if (confirm(`Delete ${t.name} and its history?`)) {
            act(`delete ${t.name}`, () => api("DELETE", `/api/topics/${encodeURIComponent(short)}`));
          }
        }),
      );
      return row;
    }),
  );
  fill(
    $("exchanges").tBodies[0],
    exchanges.exchanges.map((x) => {
      const row = document.createElement("tr");
      row.dataset.exchange = x.name;
      cell(row, x.configured ? `${x.name} (config file)` : x.name);
      cell(row, x.type);
      const list = document.createElement("ul");
      for (const b of x.bindings) {
        const li = document.createElement("li");
        const target = b.queue ?? `/exchange/${b.exchange}`;
        li.textContent = `${b.key || "(any key)"} → ${target}${b.subscription ? " (a subscription's)" : ""} `;
        if (!b.subscription) {
          const body = { key: b.key, arguments: b.arguments ?? {} };
          if (b.queue) body.queue = b.queue;
          else body.exchange = b.exchange;
          li.append(button("Unbind", () => act(`unbind ${target}`, () => api("DELETE", `/api/exchanges/${encodeURIComponent(x.name)}/bindings`, body))));
        }
        list.append(li);
      }
      cell(row, "").append(list);
      const actions = cell(row, "");
      if (!x.configured) {
        actions.append(
          button("Delete", () => {
            if (confirm(`Delete exchange ${x.name} and its bindings?`)) {
              act(`delete exchange ${x.name}`, () => api("DELETE", `/api/exchanges/${encodeURIComponent(x.name)}`));
            }
          }),
        );
      }
      return row;
    }),
  );
  fill(
    $("connections").tBodies[0],
    connections.connections.map((c) => {
      const row = document.createElement("tr");
      cell(row, c.id);
      cell(row, c.peer);
      cell(row, c.transport);
      cell(row, c.login ?? "(connecting)");
      cell(row, new Date(c.opened_at_ms).toLocaleTimeString());
      cell(row, c.subscriptions);
      cell(row, c.send_rate);
      cell(row, c.deliver_rate);
      cell(row, "").append(button("Close", () => act(`close ${c.id}`, () => api("DELETE", `/api/connections/${c.id}`))));
      return row;
    }),
  );
}

$("declare").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("declare-name").value.trim();
  act(`declare ${name}`, () => api("PUT", `/api/exchanges/${encodeURIComponent(name)}`, { type: $("declare-type").value }));
});
$("bind").addEventListener("submit", (event) => {
  event.preventDefault();
  const exchange = $("bind-exchange").value.trim();
  const body = { queue: $("bind-queue").value.trim(), key: $("bind-key").value };
  act(`bind ${exchange}`, () => api("POST", `/api/exchanges/${encodeURIComponent(exchange)}/bindings`, body));
});

// The STOMP console: one WebSocket to the broker, frames as typed.
let socket = null;

function show(text) {
  const out = $("console-output");
  out.textContent += text;
  out.scrollTop = out.scrollHeight;
}

$("console-open").addEventListener("click", () => {
  if (socket) {
    socket.close();
    return;
  }
  if (!wsUrl) return;
  socket = new WebSocket(wsUrl, ["v12.stomp", "v11.stomp", "v10.stomp"]);
  socket.addEventListener("open", () => {
    show(`— connected to ${wsUrl}\n`);
    $("console-send").disabled = false;
    $("console-open").textContent = "Close the connection";
  });
  socket.addEventListener("message", (event) => {
    const text = typeof event.data === "string" ? event.data : "(binary frame)";
    show(text === "\n" ? "(heart-beat)\n" : `${text.replaceAll("\0", "^@")}\n`);
  });
  socket.addEventListener("close", () => {
    show("— connection closed\n");
    socket = null;
    $("console-send").disabled = true;
    $("console-open").textContent = "Open a connection";
  });
});

$("console-send").addEventListener("click", () => {
  if (!socket) return;
  const typed = $("console-input").value.replaceAll("\r\n", "\n");
  for (const part of typed.split("^@")) {
    const frame = part.replace(/^\n+/, "");
    if (!frame.trim()) continue;
    // A frame ends with an empty line before its body: make sure it has one.
    const withBreak = frame.includes("\n\n") ? frame : `${frame.replace(/\n*$/, "")}\n\n`;
    socket.send(`${withBreak}\0`);
    show(`> ${withBreak.trimEnd().replaceAll("\n", "\n> ")}\n`);
  }
});

if (auth) signIn();
