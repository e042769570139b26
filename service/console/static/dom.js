// Building DOM nodes (text only, never HTML strings from data) and formatting what the pages show.

/** h("a", {href, class: "x"}, "text", child…): attributes, then children (strings become text). */
export function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

/** A search hit's highlight (HTML-escaped text with <mark> around the matches) as nodes: the text is
 * unescaped into text nodes and only <mark> becomes an element, so nothing else from the data is markup. */
export function highlightNodes(highlight) {
  const unescape = (text) =>
    text.replace(/&(lt|gt|quot|#x27|amp);/g, (_, name) => ({ lt: "<", gt: ">", quot: '"', "#x27": "'", amp: "&" })[name]);
  const nodes = [];
  let marked = false;
  for (const part of highlight.split(/(<mark>|<\/mark>)/)) {
    if (part === "<mark>" || part === "</mark>") marked = part === "<mark>";
    else if (part) nodes.push(marked ? h("mark", {}, unescape(part)) : unescape(part));
  }
  return nodes;
}

export function show(node, visible) {
  node.hidden = !visible;
}

/** Show `message` in an alert element (or hide it when empty). */
export function alertIn(node, message) {
  node.textContent = message || "";
  node.hidden = !message;
}

export const LIVE = new Set(["queued", "ringing", "in-progress", "forwarding"]);

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}

export function clock(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  const whole = Math.max(0, Math.floor(seconds));
  const hours = Math.floor(whole / 3600);
  const minutes = Math.floor((whole % 3600) / 60);
  const rest = String(whole % 60).padStart(2, "0");
  return hours ? `${hours}:${String(minutes).padStart(2, "0")}:${rest}` : `${minutes}:${rest}`;
}

/** Talk time: from answer to end (or now, while live). */
export function callSeconds(call, now = Date.now()) {
  if (!call.startedAt) return null;
  const end = call.endedAt ? Date.parse(call.endedAt) : now;
  return (end - Date.parse(call.startedAt)) / 1000;
}

export function timeOf(iso) {
  return iso ? new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "—";
}

export function dateTime(iso) {
  return iso ? new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "medium" }) : "—";
}

export function customerLabel(customer = {}) {
  return [customer.name, customer.number].filter(Boolean).join(" · ") || "Unknown caller";
}

export function megabytes(bytes) {
  return `${(bytes / 1048576).toFixed(bytes < 10485760 ? 1 : 0)} MB`;
}

const FEED_STATES = { live: "Live", retrying: "Reconnecting…", ended: "Call over" };

export function feedState(node, state) {
  node.textContent = FEED_STATES[state];
  node.dataset.state = state;
}
