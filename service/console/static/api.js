// The API key (sessionStorage only: gone when the tab closes, never a cookie) and calls to /v1 with it.

const KEY = "switchboard.apiKey";

export const session = {
  get key() {
    return sessionStorage.getItem(KEY);
  },
  signIn(key) {
    sessionStorage.setItem(KEY, key);
  },
  signOut() {
    sessionStorage.removeItem(KEY);
  },
};

/** A non-2xx answer: `message` is the problem document's detail, `problem` the whole document. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

function toSignIn(reason) {
  const next = encodeURIComponent(location.pathname + location.search);
  location.assign(`/console/sign-in?next=${next}${reason ? `&reason=${reason}` : ""}`);
}

/** Call from a page's start: false (and off to the sign-in page) when no key is held. */
export function requireSignIn() {
  if (session.key) {
    document.getElementById("sign-out")?.addEventListener("click", () => {
      session.signOut();
      location.assign("/console/sign-in");
    });
    return true;
  }
  toSignIn();
  return false;
}

async function problemOf(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/** fetch() with the key; throws ApiError on an error answer (a 401 also signs out). */
export async function api(path, { method = "GET", body, signal, key = session.key } = {}) {
  const headers = { Authorization: `Bearer ${key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    cache: "no-store",
  });
  if (response.ok) return response;
  const error = new ApiError(response.status, await problemOf(response));
  if (response.status === 401 && key === session.key) {
    session.signOut();
    toSignIn("expired");
  }
  throw error;
}

export async function getJSON(path, options) {
  return (await api(path, options)).json();
}

/** Every item of a paginated listing (`{data, nextCursor}`), following cursors. */
export async function getAll(path, params = {}) {
  const items = [];
  let cursor = null;
  do {
    const query = new URLSearchParams({ ...params, ...(cursor ? { cursor } : {}) });
    const page = await getJSON(`${path}?${query}`);
    items.push(...page.data);
    cursor = page.nextCursor;
  } while (cursor);
  return items;
}

/**
 * Follow a server-sent-event stream with the key in the Authorization header (EventSource cannot send
 * one), reconnecting after a pause when it breaks. `onEvent(type, data)`; `onState("live"|"retrying")`.
 * Returns a function that stops it.
 */
export function follow(path, { onEvent, onState }) {
  const stop = new AbortController();
  (async () => {
    while (!stop.signal.aborted) {
      try {
        const response = await api(path, { signal: stop.signal });
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer = (buffer + value).replace(/\r\n/g, "\n"); // a CR at a chunk's end pairs up next time
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const message = parseEvent(block);
            if (message.type === "ready") onState("live");
            else if (message.data !== null) onEvent(message.type, JSON.parse(message.data));
          }
        }
      } catch (error) {
        if (stop.signal.aborted || (error instanceof ApiError && error.status === 401)) return;
      }
      onState("retrying");
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  })();
  return () => stop.abort();
}

function parseEvent(block) {
  let type = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) type = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return { type, data: data.length ? data.join("\n") : null };
}
