import { session } from "./api.js";
import { alertIn } from "./dom.js";

const form = document.getElementById("sign-in-form");
const input = document.getElementById("api-key");
const error = document.getElementById("sign-in-error");
const params = new URLSearchParams(location.search);

function nextPage() {
  const next = params.get("next") || "";
  return next.startsWith("/console/") || next === "/console" ? next : "/console/";
}

function fail(message) {
  alertIn(error, message);
  input.setAttribute("aria-invalid", "true");
  input.focus();
}

if (params.get("reason") === "expired") {
  alertIn(error, "Your API key is no longer accepted (revoked?). Sign in again.");
}
input.focus();

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = input.value.trim();
  if (!key) return fail("Enter an API key.");
  let response;
  try {
    response = await fetch("/v1/calls?limit=1", { headers: { Authorization: `Bearer ${key}` }, cache: "no-store" });
  } catch {
    return fail("Switchboard cannot be reached. Check the connection and try again.");
  }
  // 403: a valid key without calls:read; it may still serve the rules pages.
  if (response.status === 401) return fail("Invalid API key: Switchboard does not know it (or it was revoked).");
  if (!response.ok && response.status !== 403) return fail(`Switchboard answered ${response.status}; try again.`);
  session.signIn(key);
  location.assign(nextPage());
});
