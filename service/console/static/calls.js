// The call list: the newest calls, kept current by the change stream; durations tick every second.
import { follow, getJSON, requireSignIn } from "./api.js";
import {
  LIVE,
  alertIn,
  callSeconds,
  clock,
  customerLabel,
  feedState,
  h,
  highlightNodes,
  show,
  statusBadge,
  timeOf,
} from "./dom.js";

const PAGE_SIZE = 100;
const body = document.getElementById("calls-body");
const empty = document.getElementById("calls-empty");
const error = document.getElementById("calls-error");
const liveOnly = document.getElementById("live-only");
const calls = new Map(); // id → call, the newest version seen

function recordingCell(call) {
  const recording = call.recording;
  if (!recording || recording.status === "none") return h("td", { class: "muted" }, "—");
  const label = recording.status === "recording" ? "● recording" : recording.status;
  return h("td", {}, h("span", { class: `rec rec-${recording.status}` }, label), ` ${clock(recording.durationSeconds)}`);
}

function row(call) {
  const live = LIVE.has(call.status);
  return h(
    "tr",
    { class: live ? "live" : null, "data-call-id": call.id },
    h("td", {}, h("a", { href: `/console/calls/${encodeURIComponent(call.id)}`, class: "mono" }, call.id.slice(0, 8))),
    h("td", {}, statusBadge(call.status)),
    h("td", {}, customerLabel(call.customer)),
    h("td", { class: "num duration" }, clock(callSeconds(call))),
    recordingCell(call),
    h("td", {}, timeOf(call.createdAt)),
  );
}

function render() {
  const shown = [...calls.values()]
    .filter((call) => !liveOnly.checked || LIVE.has(call.status))
    .sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id))
    .slice(0, PAGE_SIZE);
  body.replaceChildren(...shown.map(row));
  show(empty, shown.length === 0);
}

function remember(call) {
  const known = calls.get(call.id);
  if (!known || known.updatedAt <= call.updatedAt) calls.set(call.id, call);
}

// -- search ---------------------------------------------------------------------------------------

const SPEAKERS = { user: "Customer", assistant: "Assistant" };

function hitItem(hit) {
  // The call page plays the recording from ?t= (where the utterance begins).
  const at = hit.offsetSeconds === null ? "" : `?t=${hit.offsetSeconds}`;
  return h(
    "li",
    { class: "hit" },
    h("a", { href: `/console/calls/${encodeURIComponent(hit.callId)}${at}`, class: "mono" }, hit.callId.slice(0, 8)),
    h("span", { class: "who" }, SPEAKERS[hit.role] || hit.role),
    h("q", {}, ...highlightNodes(hit.highlight)),
    h("span", { class: "muted small" }, hit.offsetSeconds === null ? timeOf(hit.occurredAt) : `at ${clock(hit.offsetSeconds)}`),
  );
}

async function search(event) {
  event.preventDefault();
  const text = document.getElementById("search-text").value.trim();
  const results = document.getElementById("search-results");
  const problem = document.getElementById("search-error");
  alertIn(problem, "");
  if (!text) {
    show(results, false);
    show(document.getElementById("search-empty"), false);
    return;
  }
  try {
    const page = await getJSON(`/v1/search/transcripts?limit=20&q=${encodeURIComponent(text)}`);
    results.replaceChildren(...page.data.map(hitItem));
    show(results, page.data.length > 0);
    show(document.getElementById("search-empty"), page.data.length === 0);
  } catch (failure) {
    show(results, false);
    alertIn(problem, failure.status === 403 ? "This API key cannot search calls (it lacks calls:read)." : failure.message);
  }
}

async function start() {
  if (!requireSignIn()) return;
  document.getElementById("search-form").addEventListener("submit", search);
  // The stream first: it replays the last seconds of changes, so nothing falls between it and the list.
  follow("/v1/console/stream", {
    onEvent(type, call) {
      if (type !== "call") return;
      remember(call);
      render();
    },
    onState: (state) => feedState(document.getElementById("feed-state"), state),
  });
  try {
    const page = await getJSON(`/v1/calls?limit=${PAGE_SIZE}`);
    page.data.forEach(remember);
    render();
  } catch (failure) {
    alertIn(error, failure.status === 403 ? "This API key cannot read calls (it lacks calls:read)." : failure.message);
  }
  liveOnly.addEventListener("change", render);
  setInterval(() => {
    for (const cell of body.querySelectorAll("tr.live")) {
      const call = calls.get(cell.dataset.callId);
      cell.querySelector(".duration").textContent = clock(callSeconds(call));
    }
  }, 1000);
}

start();
