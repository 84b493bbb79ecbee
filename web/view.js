// How one chat line is drawn: author (verified or marked as a guest), time,
// text with its links as anchors, and a separator when the day changes.
// Everything comes from strings other people typed, so it is put on the
// page with textContent and elements, never as HTML.

// Nickname colours are CSS variables so light and dark themes each get readable ones.
const COLORS = [0, 1, 2, 3, 4, 5].map((i) => `var(--nick-${i})`);

export function colorOf(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + c.codePointAt(0)) >>> 0;
  return COLORS[h % COLORS.length];
}

// http and https only: a javascript: or data: link is left as text.
const LINK = /\bhttps?:\/\/[^\s<>"'`]+/g;

/** Appends `text` to `parent`, its http(s) links as anchors that open apart. */
export function appendLinked(parent, text) {
  let at = 0;
  for (const match of text.matchAll(LINK)) {
    // A sentence's closing punctuation is not part of the link.
    const url = match[0].replace(/[.,;:!?)\]]+$/, "");
    if (match.index > at) parent.append(text.slice(at, match.index));
    let href;
    try {
      href = new URL(url);
    } catch {
      parent.append(url);
      at = match.index + url.length;
      continue;
    }
    const a = document.createElement("a");
    a.href = href.href;
    a.textContent = url;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    parent.append(a);
    at = match.index + url.length;
  }
  if (at < text.length) parent.append(text.slice(at));
}

/** "Today", "Yesterday" or the date, for a day separator. */
export function dayLabel(date, now = new Date()) {
  const day = (d) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
  const diff = Math.round((day(now) - day(date)) / 86_400_000);
  if (diff === 0) return "Today";
  if (diff === 1) return "Yesterday";
  return date.toLocaleDateString([], { weekday: "long", year: "numeric", month: "long", day: "numeric" });
}

function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}

/** The separator to put before `item` when its day differs from `previous`'s. */
export function separatorBefore(item, previous) {
  if (previous && sameDay(previous.time, item.time)) return null;
  const li = document.createElement("li");
  li.className = "day";
  li.dataset.kind = "day";
  li.setAttribute("role", "separator");
  li.textContent = dayLabel(item.time);
  return li;
}

/**
 * One line: `item` is { kind: "chat"|"system", author, guest, text, time,
 * history, mine, mention }.
 */
export function messageElement(item) {
  const li = document.createElement("li");
  li.dataset.kind = item.kind;
  if (item.history) li.classList.add("history");
  if (item.mention) li.classList.add("mention");
  const time = document.createElement("time");
  time.dateTime = item.time.toISOString();
  time.textContent = item.time.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  time.title = item.time.toLocaleString();
  li.append(time);
  if (item.kind === "system") {
    li.classList.add("system");
    li.append(document.createTextNode(item.text));
    return li;
  }
  const author = document.createElement("span");
  author.className = "author";
  author.style.color = colorOf(item.author);
  author.textContent = item.author;
  if (item.guest) {
    author.classList.add("guest");
    author.title = "a guest: not logged in, so the name is not verified";
  }
  const text = document.createElement("span");
  text.className = "text";
  appendLinked(text, item.text);
  li.append(author, text);
  return li;
}
