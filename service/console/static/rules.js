// Rules: the list, an editor whose errors show next to their fields, and a dry run against a past call.
import { ApiError, api, getAll, getJSON, requireSignIn } from "./api.js";
import { alertIn, customerLabel, h, show, timeOf } from "./dom.js";

const $ = (id) => document.getElementById(id);
const form = $("rule-form");
const FIELDS = ["name", "on", "delay", "at", "for", "if", "say", "action"];
let rules = [];
let current = null; // the rule being edited (null: a new one)

// -- list -----------------------------------------------------------------------------------------

function renderList() {
  $("rule-list").replaceChildren(
    ...rules.map((rule) =>
      h(
        "li",
        {},
        h(
          "button",
          { type: "button", class: "rule-item", "aria-current": current?.name === rule.name ? "true" : null, onclick: () => edit(rule) },
          h("span", { class: "rule-name" }, rule.name),
          h("span", { class: "muted small" }, ` ${rule.compiled.on}`),
          rule.source === "file" ? h("span", { class: "badge" }, "file") : null,
        ),
      ),
    ),
  );
  show($("rules-empty"), rules.length === 0);
}

async function loadRules() {
  try {
    rules = await getAll("/v1/rules", { limit: 500 });
    renderList();
  } catch (error) {
    alertIn($("rules-error"), error.status === 403 ? "This API key cannot read rules (it lacks rules:read)." : error.message);
  }
}

// -- editor ---------------------------------------------------------------------------------------

const input = (field) => form.elements[field];

function text(value) {
  return value === undefined || value === null ? "" : String(value);
}

function edit(rule) {
  current = rule;
  clearErrors();
  $("rule-status").textContent = "";
  const doc = rule?.document || {};
  $("editor-title").textContent = rule ? rule.name : "New rule";
  for (const field of ["name", "delay", "at", "for", "if", "say"]) input(field).value = text(doc[field]);
  input("on").value = doc.on || "call.answered";
  input("action").value = doc.action ? JSON.stringify(doc.action, null, 2) : "";
  input("once").checked = doc.once !== false;
  input("name").readOnly = Boolean(rule);
  const fromFile = rule?.source === "file";
  show($("editor-readonly"), fromFile);
  show($("editor-source"), Boolean(rule));
  $("editor-source").textContent = fromFile ? "from the rules file" : "stored";
  for (const control of form.elements) if (control.name !== "name") control.disabled = fromFile;
  $("rule-validate").disabled = false;
  show($("rule-delete"), rule && !fromFile);
  showTimedFields();
  renderList();
}

function showTimedFields() {
  for (const field of form.querySelectorAll("[data-for-milestone]")) {
    const wanted = field.dataset.forMilestone === input("on").value;
    show(field, wanted || input(field.querySelector("input").name).value !== "");
  }
}

/** The rule document the form describes (empty fields left out); a bad action JSON is reported inline. */
function documentOf() {
  const doc = { name: input("name").value.trim(), on: input("on").value };
  if (current?.document?.description) doc.description = current.document.description;
  for (const field of ["delay", "at", "for", "if", "say"]) {
    const value = input(field).value.trim();
    if (value) doc[field] = value;
  }
  const action = input("action").value.trim();
  if (action) {
    try {
      doc.action = JSON.parse(action);
    } catch (error) {
      return { errors: [{ field: "action", reason: `not valid JSON: ${error.message}` }] };
    }
  }
  if (!input("once").checked) doc.once = false;
  return { doc };
}

function clearErrors() {
  alertIn($("rule-error"), "");
  for (const field of FIELDS) {
    alertIn($(`rule-${field}-error`), "");
    input(field).removeAttribute("aria-invalid");
  }
}

/** Each error under its field (`action.content` → action, `at` → at …); the rest above the form. */
function showErrors(errors) {
  clearErrors();
  const general = [];
  const byField = new Map();
  for (const error of errors) {
    const field = FIELDS.find((name) => error.field === name || error.field?.startsWith(`${name}.`));
    if (!field) {
      general.push(error.field ? `${error.field}: ${error.reason}` : error.reason);
      continue;
    }
    const detail = error.field === field ? error.reason : `${error.field}: ${error.reason}`;
    byField.set(field, [...(byField.get(field) || []), detail]);
  }
  for (const [field, reasons] of byField) {
    const container = input(field).closest("[data-for-milestone]");
    if (container) show(container, true);
    alertIn($(`rule-${field}-error`), reasons.join(" "));
    input(field).setAttribute("aria-invalid", "true");
  }
  alertIn($("rule-error"), general.length ? general.join(" ") : "");
  const first = FIELDS.find((field) => byField.has(field));
  (first ? input(first) : $("rule-error")).focus?.();
}

/** Validate the form's rule; its document when valid, null (errors shown) otherwise. */
async function validated() {
  const { doc, errors } = documentOf();
  if (errors) {
    showErrors(errors);
    return null;
  }
  const result = await getJSON("/v1/rules/validate", { method: "POST", body: doc });
  if (!result.valid) {
    showErrors(result.errors);
    return null;
  }
  clearErrors();
  return doc;
}

async function save(event) {
  event.preventDefault();
  const status = $("rule-status");
  status.textContent = "";
  try {
    const doc = await validated();
    if (!doc) return;
    const saved = await (await api(`/v1/rules/${encodeURIComponent(doc.name)}`, { method: "PUT", body: doc })).json();
    status.textContent = `Saved at ${timeOf(new Date().toISOString())}; live calls use it at once.`;
    await loadRules();
    edit(rules.find((rule) => rule.name === saved.name) || saved);
    status.textContent = `Saved ${saved.name}.`;
  } catch (error) {
    reportError(error, "This API key cannot change rules (it lacks rules:write).");
  }
}

async function validateOnly() {
  $("rule-status").textContent = "";
  try {
    if (await validated()) $("rule-status").textContent = "The rule is valid.";
  } catch (error) {
    reportError(error, "This API key cannot read rules (it lacks rules:read).");
  }
}

async function remove() {
  if (!current || !window.confirm(`Delete the rule ${current.name}?`)) return;
  try {
    await api(`/v1/rules/${encodeURIComponent(current.name)}`, { method: "DELETE" });
    await loadRules();
    edit(null);
    $("rule-status").textContent = "Deleted.";
  } catch (error) {
    reportError(error, "This API key cannot change rules (it lacks rules:write).");
  }
}

function reportError(error, forbidden) {
  if (error instanceof ApiError && error.problem?.errors) showErrors(error.problem.errors);
  else alertIn($("rule-error"), error.status === 403 ? forbidden : error.message);
}

// -- dry run --------------------------------------------------------------------------------------

async function loadCalls() {
  const select = $("dry-run-call");
  try {
    const calls = (await getJSON("/v1/calls?limit=50")).data;
    select.replaceChildren(
      ...calls.map((call) => h("option", { value: call.id }, `${timeOf(call.createdAt)} · ${customerLabel(call.customer)} · ${call.status} · ${call.id.slice(0, 8)}`)),
    );
    if (!calls.length) select.append(h("option", { value: "" }, "No calls yet"));
  } catch (error) {
    $("dry-run-status").textContent = error.status === 403 ? "Dry runs need calls:read: this key lacks it." : error.message;
  }
}

function outcome(step) {
  return h("td", {}, h("span", { class: `badge ${step.wouldFire ? "firing-fired" : "firing-skipped"}` }, step.wouldFire ? "fires" : "no"), ` ${step.wouldFire ? "" : step.reason}`);
}

function sent(step) {
  if (!step.message) return h("td", { class: "muted" }, "—");
  const content = step.message.type === "say" ? `“${step.message.content}”` : JSON.stringify(step.message);
  const missing = step.missingFields?.length ? ` (missing: ${step.missingFields.join(", ")})` : "";
  return h("td", {}, content, h("span", { class: "muted" }, missing));
}

async function dryRun(event) {
  event.preventDefault();
  const status = $("dry-run-status");
  const table = $("dry-run-table");
  show(table, false);
  const callId = $("dry-run-call").value;
  if (!callId) return;
  const { doc, errors } = documentOf();
  if (errors) return showErrors(errors);
  status.textContent = "Running…";
  try {
    const result = await getJSON("/v1/rules/dry-run", { method: "POST", body: { rule: doc, callId } });
    if (!result.valid) {
      status.textContent = "Fix the rule's errors first.";
      return showErrors(result.errors);
    }
    clearErrors();
    status.textContent = result.steps.length
      ? `${result.fired} of ${result.steps.length} occurrences would fire.`
      : "The rule's milestone never happened on this call.";
    $("dry-run-body").replaceChildren(
      ...result.steps.map((step) =>
        h("tr", {}, h("td", { class: "num" }, `#${step.seq}`), h("td", {}, step.milestone, h("div", { class: "muted small" }, timeOf(step.occurredAt))), outcome(step), sent(step)),
      ),
    );
    show(table, result.steps.length > 0);
  } catch (error) {
    status.textContent = error.status === 403 ? "Dry runs need rules:read and calls:read." : error.message;
  }
}

// -- wiring ---------------------------------------------------------------------------------------

async function start() {
  if (!requireSignIn()) return;
  form.addEventListener("submit", save);
  $("rule-validate").addEventListener("click", validateOnly);
  $("rule-delete").addEventListener("click", remove);
  $("new-rule").addEventListener("click", () => {
    edit(null);
    input("name").focus();
  });
  input("on").addEventListener("change", showTimedFields);
  $("dry-run-form").addEventListener("submit", dryRun);
  edit(null);
  await Promise.all([loadRules(), loadCalls()]);
  const wanted = new URLSearchParams(location.search).get("rule");
  const rule = rules.find((candidate) => candidate.name === wanted);
  if (rule) edit(rule);
}

start();
