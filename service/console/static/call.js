// One call: facts, a live timeline (transcripts as a chat), say, live listening, recording, rule firings.
import { ApiError, api, follow, getJSON, requireSignIn, session } from "./api.js";
import {
  LIVE,
  alertIn,
  callSeconds,
  clock,
  customerLabel,
  dateTime,
  feedState,
  h,
  megabytes,
  show,
  statusBadge,
  timeOf,
} from "./dom.js";
import { LivePlayer } from "./listen.js";

const AUTO_LOAD_BYTES = 20 * 1048576; // larger recordings wait for a click
const RAW_PAYLOAD_CHARS = 4000;
const $ = (id) => document.getElementById(id);
const callId = $("call-page").dataset.callId;
const base = `/v1/calls/${encodeURIComponent(callId)}`;

let call = null;
const events = [];
let fetching = null;
let refetch = false;
let recordingLoaded = false;
// ?t=S (a search result): play the recording from S seconds, where the utterance begins.
const startAt = Number.parseFloat(new URLSearchParams(window.location.search).get("t"));

// -- timeline -------------------------------------------------------------------------------------

const timeline = $("timeline");
let shownTranscripts; // "role|text" → bubbles shown; the webhook and listen copies of a line make one
let perSource; // "source|role|text" → copies seen from that source

function resetTimeline() {
  timeline.replaceChildren();
  shownTranscripts = new Map();
  perSource = new Map();
}

const SPEAKERS = { user: "Customer", assistant: "Assistant" };

function transcriptItem(event) {
  const { role, transcript } = event.payload;
  const key = `${role}|${transcript.trim().toLowerCase()}`;
  const fromSource = (perSource.get(`${event.source}|${key}`) || 0) + 1;
  perSource.set(`${event.source}|${key}`, fromSource);
  if (fromSource <= (shownTranscripts.get(key) || 0)) return null;
  shownTranscripts.set(key, fromSource);
  return h(
    "li",
    { class: `bubble from-${role === "user" ? "customer" : "assistant"}` },
    h("span", { class: "who" }, SPEAKERS[role] || role),
    h("p", {}, transcript),
    h("time", { datetime: event.occurredAt }, timeOf(event.occurredAt)),
  );
}

function note(event, kind, ...content) {
  return h("li", { class: `note note-${kind}` }, h("time", { datetime: event.occurredAt }, timeOf(event.occurredAt)), h("span", {}, ...content));
}

function describeMessage(message) {
  if (message?.type === "say") return `Said “${message.content}”`;
  return `Sent ${message?.type || "a control message"}`;
}

function eventItem(event) {
  const p = event.payload || {};
  switch (event.type) {
    case "transcript":
      return p.transcriptType === "final" && typeof p.transcript === "string" ? transcriptItem(event) : null;
    case "call.created":
    case "call.imported":
      return note(event, "status", "Call ", event.type === "call.created" ? "placed" : "imported");
    case "call.status_changed":
      return note(event, "status", "Status ", statusBadge(p.to));
    case "injection.sent":
      return note(event, "inject", describeMessage(p.message));
    case "injection.failed":
      return note(event, "error", `${describeMessage(p.message)}: not delivered (${p.error})`);
    case "rule.fired":
      return note(event, "rule", "Rule ", h("strong", {}, p.rule), ` fired on ${p.milestone}`);
    case "rule.failed":
      return note(event, "error", "Rule ", h("strong", {}, p.rule), ` failed: ${p.error}`);
    case "rule.skipped":
      return note(event, "rule", "Rule ", h("strong", {}, p.rule), ` skipped: ${p.reason}`);
    case "listen.connected":
      return note(event, "system", `Recording connected (segment ${p.segment})`);
    case "listen.disconnected":
    case "listen.failed":
      return note(event, "error", `Recording connection lost: ${p.reason}`);
    case "recording.completed":
      return note(event, "system", `Recording ${p.status} (${megabytes(p.bytes || 0)})`);
    case "end-of-call-report":
      return note(event, "status", `Call ended: ${p.endedReason || "no reason given"}`);
    default:
      return null;
  }
}

function rawItem(event) {
  const text = JSON.stringify(event.payload, null, 2);
  return h(
    "li",
    { class: "raw" },
    h(
      "details",
      {},
      h("summary", {}, h("time", {}, timeOf(event.occurredAt)), ` #${event.seq} ${event.type} `, h("span", { class: "muted" }, event.source)),
      h("pre", {}, text.length > RAW_PAYLOAD_CHARS ? `${text.slice(0, RAW_PAYLOAD_CHARS)}\n…` : text),
    ),
  );
}

function appendEvents(batch) {
  const atBottom = timeline.scrollTop + timeline.clientHeight >= timeline.scrollHeight - 40;
  const everything = $("all-events").checked;
  const items = batch.map((event) => eventItem(event) || (everything ? rawItem(event) : null)).filter(Boolean);
  timeline.append(...items);
  show($("timeline-empty"), timeline.childElementCount === 0);
  if (atBottom) timeline.scrollTop = timeline.scrollHeight;
}

/** Fetch the events after the last one held; one fetch at a time, another after it when asked meanwhile. */
async function fetchEvents() {
  if (fetching) {
    refetch = true;
    return fetching;
  }
  fetching = (async () => {
    do {
      refetch = false;
      let page;
      do {
        const after = events.length ? events[events.length - 1].seq : 0;
        page = await getJSON(`${base}/events?afterSeq=${after}&limit=500`);
        events.push(...page.data);
        appendEvents(page.data);
      } while (page.nextCursor);
    } while (refetch);
  })();
  try {
    await fetching;
  } finally {
    fetching = null;
  }
}

// -- facts ----------------------------------------------------------------------------------------

function fact(term, ...value) {
  return h("div", {}, h("dt", {}, term), h("dd", {}, ...value));
}

function outcome(call) {
  if (!call.endedReason) return "—";
  const parts = [call.endedReason];
  if (call.endedMessage) parts.push(call.endedMessage);
  const success = call.analysis?.successEvaluation;
  if (success !== undefined && success !== null) parts.push(`success: ${success}`);
  return parts.join(" · ");
}

function cost(call) {
  if (call.cost === null || call.cost === undefined) return "—";
  const items = (call.costs || []).map((item) => `${item.type} $${Number(item.cost).toFixed(4)}`);
  return `$${call.cost.toFixed(4)}${items.length ? ` (${items.join(", ")})` : ""}`;
}

function renderCall() {
  $("call-title").textContent = customerLabel(call.customer);
  $("call-status").replaceWith(Object.assign(statusBadge(call.status), { id: "call-status" }));
  const metadata = Object.entries(call.metadata || {}).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
  $("call-facts").replaceChildren(
    fact("Talk time", h("span", { id: "talk-time" }, clock(callSeconds(call)))),
    fact("Placed", dateTime(call.createdAt)),
    fact("Answered", dateTime(call.startedAt)),
    fact("Ended", call.endedAt ? `${dateTime(call.endedAt)} (${call.endedReason || "no reason"})` : "—"),
    fact("Assistant", call.assistantId || "—"),
    fact("Metadata", metadata.join(", ") || "—"),
    // What Vapi reported after the call (its end-of-call report): outcome, cost, summary.
    fact("Outcome", h("span", { id: "call-outcome" }, outcome(call))),
    fact("Cost", h("span", { id: "call-cost" }, cost(call))),
    fact("Summary", h("span", { id: "call-summary" }, call.summary || "—")),
  );
  const live = LIVE.has(call.status);
  for (const control of $("say-form").elements) control.disabled = !live;
  for (const control of $("control-form").elements) control.disabled = !live;
  $("listen-button").disabled = !live && !player.listening;
  if (!live && !$("say-status").textContent) $("say-status").textContent = "The call is not live: nothing can be said into it.";
}

// -- say ------------------------------------------------------------------------------------------

async function say(event) {
  event.preventDefault();
  const status = $("say-status");
  const content = $("say-text").value.trim();
  if (!content) {
    status.textContent = "Type what the assistant should say.";
    return;
  }
  $("say-button").disabled = true;
  try {
    const body = { content, interruptAssistantEnabled: $("say-interrupt").checked };
    const injection = await (await api(`${base}/say`, { method: "POST", body })).json();
    if (injection.status === "sent") {
      status.textContent = `Sent at ${timeOf(injection.sentAt)}.`;
      $("say-text").value = "";
    } else {
      status.textContent = `Not delivered: ${injection.error}`;
    }
  } catch (error) {
    status.textContent = error.status === 403 ? "This API key cannot speak into calls (it lacks calls:write)." : error.message;
  } finally {
    $("say-button").disabled = !LIVE.has(call.status);
  }
  fetchEvents();
}

// -- end call, transfer, mute ---------------------------------------------------------------------

async function control(message, done) {
  const status = $("control-status");
  const buttons = [...$("control-form").elements];
  for (const element of buttons) element.disabled = true;
  try {
    const injection = await (await api(`${base}/control`, { method: "POST", body: message })).json();
    if (injection.status === "sent") {
      status.textContent = `${done} at ${timeOf(injection.sentAt)}.`;
      return true;
    }
    status.textContent = `Not delivered: ${injection.error}`;
  } catch (error) {
    status.textContent = error.status === 403 ? "This API key cannot control calls (it lacks calls:write)." : error.message;
  } finally {
    for (const element of buttons) element.disabled = !LIVE.has(call.status);
    fetchEvents();
  }
  return false;
}

async function toggleMute() {
  const button = $("mute-button");
  const muted = button.dataset.muted === "true";
  const sent = await control({ type: "control", control: muted ? "unmute-assistant" : "mute-assistant" }, muted ? "Unmuted" : "Muted");
  if (!sent) return;
  button.dataset.muted = String(!muted);
  button.setAttribute("aria-pressed", String(!muted));
  button.textContent = muted ? "Mute assistant" : "Unmute assistant";
}

async function endCall() {
  if (!window.confirm("End this call now?")) return;
  await control({ type: "end-call" }, "End-call sent");
}

async function transfer(event) {
  event.preventDefault();
  const number = $("transfer-number").value.trim();
  if (!/^\+[1-9][0-9]{6,14}$/.test(number)) {
    $("control-status").textContent = "Give the number in E.164 form, e.g. +14155550100.";
    return;
  }
  await control({ type: "transfer", destination: { type: "number", number } }, `Transfer to ${number} sent`);
}

// -- listen ---------------------------------------------------------------------------------------

const player = new LivePlayer((text, listening) => {
  $("listen-status").textContent = text;
  const button = $("listen-button");
  button.textContent = listening ? "Stop listening" : "Listen live";
  button.setAttribute("aria-pressed", String(listening));
  button.disabled = !listening && call && !LIVE.has(call.status);
});

async function toggleListening() {
  if (player.listening) return player.stop();
  let format = { sampleRate: 16000, channels: 2 };
  try {
    const recording = await getJSON(`${base}/recording`);
    if (recording.sampleRate && recording.channels) format = { sampleRate: recording.sampleRate, channels: recording.channels };
  } catch (error) {
    $("listen-status").textContent = error.status === 403 ? "This API key cannot listen (it lacks recordings:read)." : error.message;
    return;
  }
  await player.start(callId, session.key, format);
}

// -- recording ------------------------------------------------------------------------------------

let recordingStatus = null;

async function refreshRecording() {
  let recording;
  try {
    recording = await getJSON(`${base}/recording`);
  } catch (error) {
    $("recording-status").textContent = error.status === 403 ? "This API key cannot read recordings (it lacks recordings:read)." : error.message;
    return;
  }
  recordingStatus = recording.status;
  const format = recording.sampleRate ? `${recording.sampleRate / 1000} kHz · ${recording.channels} ch · ${recording.encoding}` : "—";
  $("recording-facts").replaceChildren(
    fact("Status", recording.status),
    fact("Length", clock(recording.durationSeconds)),
    fact("Size", megabytes(recording.bytes)),
    fact("Format", format),
    fact("Gaps", recording.gaps.length ? recording.gaps.map((gap) => `${clock(gap.atSeconds)} (${gap.durationSeconds.toFixed(1)} s, ${gap.reason})`).join(", ") : "none"),
  );
  const finished = ["completed", "partial", "failed"].includes(recording.status) && recording.bytes > 0;
  if (!finished) {
    $("recording-status").textContent = recording.status === "recording" ? "Playback and download once the call has ended." : "";
    return;
  }
  if (recording.bytes <= AUTO_LOAD_BYTES || Number.isFinite(startAt)) loadRecording();
  else show($("recording-load"), !recordingLoaded);
}

async function loadRecording() {
  if (recordingLoaded) return;
  recordingLoaded = true;
  show($("recording-load"), false);
  const status = $("recording-status");
  status.textContent = "Loading the recording…";
  try {
    // <audio> cannot send the Authorization header: fetch the WAV with it and play the blob.
    const blob = await (await api(`${base}/recording.wav`)).blob();
    const url = URL.createObjectURL(blob);
    const audio = $("recording-audio");
    audio.src = url;
    show(audio, true);
    if (Number.isFinite(startAt)) playFrom(audio, startAt);
    const link = $("recording-download");
    link.href = url;
    link.download = `${callId}.wav`;
    show(link, true);
    status.textContent = "";
  } catch (error) {
    recordingLoaded = false;
    show($("recording-load"), true);
    status.textContent = `The recording could not be loaded: ${error.message}`;
  }
}

function playFrom(audio, seconds) {
  const seek = () => {
    audio.currentTime = Math.min(seconds, audio.duration || seconds);
    audio.play().catch(() => {}); // a browser may refuse to play without a click: the position stays
  };
  if (audio.readyState >= 1) seek();
  else audio.addEventListener("loadedmetadata", seek, { once: true });
}

// -- analytics ------------------------------------------------------------------------------------

let analyticsDone = false;

function lane(track, turns, total) {
  track.replaceChildren(
    ...turns.map(([start, end]) => {
      const turn = h("span", { class: "turn", title: `${clock(start)}–${clock(end)}` });
      // Positions through the CSSOM: the page's CSP allows no inline style attributes.
      turn.style.left = `${(100 * start) / total}%`;
      turn.style.width = `${Math.max(0.3, (100 * (end - start)) / total)}%`;
      return turn;
    }),
  );
}

async function refreshAnalytics() {
  if (analyticsDone) return;
  const analytics = await getJSON(`${base}/analytics`);
  const status = $("analytics-status");
  if (analytics.status === "pending") {
    if (!LIVE.has(call.status)) setTimeout(() => refreshAnalytics().catch(failed), 2000);
    return;
  }
  analyticsDone = true;
  if (analytics.status === "failed") {
    status.textContent = `Not measured: ${analytics.error}`;
    return;
  }
  status.textContent = "";
  const total = Math.max(analytics.analyzedSeconds || 0, ...[...analytics.activity.customer, ...analytics.activity.assistant].map(([, end]) => end), 1);
  lane($("lane-customer"), analytics.activity.customer, total);
  lane($("lane-assistant"), analytics.activity.assistant, total);
  show($("analytics-lanes"), true);
  const seconds = (value) => (value === null ? "—" : `${value.toFixed(1)} s`);
  $("analytics-facts").replaceChildren(
    fact("Customer talked", seconds(analytics.customer.talkSeconds)),
    fact("Assistant talked", seconds(analytics.assistant.talkSeconds)),
    fact("Both at once", seconds(analytics.overlapSeconds)),
    fact("Longest silence", seconds(analytics.longestSilenceSeconds)),
    fact("Interruptions", `customer ${analytics.interruptions.customer} · assistant ${analytics.interruptions.assistant}`),
  );
}

// -- firings --------------------------------------------------------------------------------------

async function refreshFirings() {
  const firings = (await getJSON(`${base}/firings?limit=100`)).data;
  $("firings").replaceChildren(
    ...firings.map((firing) =>
      h(
        "li",
        {},
        h("strong", {}, firing.rule),
        " ",
        h("span", { class: `badge firing-${firing.status}` }, firing.status),
        h("span", { class: "muted" }, ` ${firing.milestone || ""} · ${firing.firedAt ? timeOf(firing.firedAt) : `due ${timeOf(firing.dueAt)}`}`),
        firing.error ? h("div", { class: "small error-text" }, firing.error) : null,
      ),
    ),
  );
  show($("firings-empty"), firings.length === 0);
}

// -- wiring ---------------------------------------------------------------------------------------

function failed(error) {
  if (!(error instanceof ApiError) || error.status !== 401) {
    alertIn($("call-error"), error.status === 404 ? `There is no call ${callId}.` : error.message);
  }
}

async function update(changed) {
  const recordingChanged = changed.recording?.status !== call?.recording?.status;
  call = changed;
  renderCall();
  await Promise.all([
    fetchEvents(),
    refreshFirings(),
    recordingChanged || !LIVE.has(call.status) ? refreshRecording() : null,
    LIVE.has(call.status) ? null : refreshAnalytics(),
  ]);
}

async function start() {
  if (!requireSignIn()) return;
  resetTimeline();
  $("all-events").addEventListener("change", () => {
    resetTimeline();
    appendEvents(events);
  });
  $("say-form").addEventListener("submit", say);
  $("mute-button").addEventListener("click", () => toggleMute().catch(failed));
  $("end-button").addEventListener("click", () => endCall().catch(failed));
  $("control-form").addEventListener("submit", (event) => transfer(event).catch(failed));
  $("listen-button").addEventListener("click", () => toggleListening().catch(failed));
  $("recording-load").addEventListener("click", loadRecording);
  const stopFollowing = follow(`/v1/console/stream?callId=${encodeURIComponent(callId)}`, {
    onEvent(type, changed) {
      if (type !== "call" || (call && changed.updatedAt < call.updatedAt)) return;
      update(changed)
        .then(() => {
          if (!LIVE.has(call.status) && recordingStatus !== "recording") {
            stopFollowing();
            feedState($("feed-state"), "ended");
          }
        })
        .catch(failed);
    },
    onState: (state) => feedState($("feed-state"), state),
  });
  try {
    await update(await getJSON(base));
  } catch (error) {
    failed(error);
  }
  setInterval(() => {
    if (call && LIVE.has(call.status)) $("talk-time").textContent = clock(callSeconds(call));
  }, 1000);
}

start();
