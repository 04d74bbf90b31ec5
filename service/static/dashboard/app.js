// jobhook dashboard: one shell, routed by path, reading the JSON API with the session cookie and kept
// live by /v1/stream (server-sent events). No build step. Every piece of data reaches the page through
// textContent or setAttribute, never through innerHTML.

const STATUSES = ["queued", "submitted", "processing", "completed", "failed", "timed_out"];
const FINISHED = new Set(["completed", "failed", "timed_out"]);
const OUTBOX_STATUSES = ["dead", "pending", "delivered"];
const PAGE_SIZE = 50;
const CALLBACK_TRACKING = new Set(["callback", "webhook + confirm"]);
const CSRF = { "X-Jobhook-CSRF": "1" };

const viewRoot = document.getElementById("view");
const liveBadge = document.getElementById("live");
const toastBox = document.getElementById("toast");
const signOutButton = document.getElementById("signout");

// ---------------------------------------------------------------------------------------------------
// DOM helpers

/** An element: props are attributes (`class`, `dataset`, `on<event>` handled), children text or nodes. */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child)); // a string becomes a text node
  }
  return el;
}

function clear(el) {
  while (el.firstChild) el.firstChild.remove();
}

let toastTimer = 0;
function toast(message, kind = "info") {
  toastBox.textContent = message;
  toastBox.dataset.tone = kind;
  toastBox.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    toastBox.hidden = true;
  }, 4000);
}

function debounce(fn, ms) {
  let timer = 0;
  const run = () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
  run.cancel = () => clearTimeout(timer);
  return run;
}

// ---------------------------------------------------------------------------------------------------
// Formatting

function toDate(value) {
  if (value === null || value === undefined) return null;
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

function ago(value) {
  const date = toDate(value);
  if (!date) return "—";
  const seconds = Math.round((Date.now() - date.getTime()) / 1000);
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${date.toISOString().slice(0, 10)} UTC`;
}

// Times are UTC, 24-hour, with the zone said: as the API, the CLI and the logs give them, whatever
// the browser's locale ("2026-12-04 14:03:07 UTC", never "12/4/2026, 2:03:07 PM").
function stamp(value) {
  const date = toDate(value);
  return date ? `${date.toISOString().slice(0, 19).replace("T", " ")} UTC` : "—";
}

/** The time of day of a job's event, to the millisecond: "14:03:07.123" (its title has the date and zone). */
function clock(value) {
  const date = toDate(value);
  return date ? date.toISOString().slice(11, 23) : "—";
}

/** An id (job, task): one line, never broken mid-word; cut with an ellipsis where there is no room. */
function idCode(text) {
  return h("code", { class: "id", title: text }, text);
}

function span(seconds) {
  if (seconds === null || !Number.isFinite(seconds)) return "—";
  if (seconds < 0) seconds = 0;
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} m ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} m`;
}

/** Created → finished; a job still under way counts up to now (refreshed every second). */
function duration(job) {
  const start = toDate(job.created_at);
  if (!start) return "—";
  const end = toDate(job.finished_at);
  if (end) return span((end - start) / 1000);
  if (FINISHED.has(job.status)) return "—";
  return `${span((Date.now() - start) / 1000)}…`;
}

function money(value) {
  if (value === null || value === undefined || !Number.isFinite(Number(value))) return "—";
  const amount = Number(value);
  return `$${amount > 0 && amount < 0.01 ? amount.toFixed(4) : amount.toFixed(2)}`;
}

function tier(job) {
  const speed = job.request && job.request.rendering_speed;
  return typeof speed === "string" && speed ? speed : "default";
}

function prompt(job) {
  const text = job.request && job.request.prompt;
  return typeof text === "string" ? text : "";
}

function label(word) {
  return String(word ?? "").replaceAll("_", " ");
}

const TONES = {
  good: ["accepted", "completed", "delivered", "done", "applied", "ok", "recovered", "closed"],
  warn: ["duplicate", "queued", "retry", "resent", "pending", "timed_out", "stopped", "degraded", "low", "uncertain", "summary", "half_open", "waiting"],
  bad: ["refused", "dead", "failed", "error", "rejected", "conflict", "open", "opened", "exhausted"],
  info: ["submitted", "processing", "sending"],
};

function tone(word) {
  for (const [name, words] of Object.entries(TONES)) if (words.includes(word)) return name;
  return "neutral";
}

function badge(word, extra) {
  return h("span", { class: `badge tone-${tone(word)}`, dataset: { value: word ?? "" } }, extra ?? label(word || "—"));
}

// ---------------------------------------------------------------------------------------------------
// URLs: only http(s) and this site's own paths ever reach an attribute.

function safeUrl(raw) {
  if (typeof raw !== "string" || !raw) return null;
  try {
    const url = new URL(raw, location.href);
    if (url.origin === location.origin) return url.pathname + url.search;
    if (url.protocol === "https:" || url.protocol === "http:") return url.href;
  } catch {
    // not a URL
  }
  return null;
}

/** jobhook's own copy (by path: same origin, the session cookie goes with it), else the provider's URL. */
function ownPath(raw) {
  try {
    const url = new URL(raw, location.href);
    return url.protocol === "https:" || url.protocol === "http:" ? url.pathname : null;
  } catch {
    return null;
  }
}

function imageSource(image) {
  if (!image || typeof image !== "object") return null;
  if (typeof image.mirror_url === "string") return ownPath(image.mirror_url);
  // An image only jobhook holds (a synchronous provider): `url` is jobhook's own and has a content type.
  if (image.content_type && typeof image.url === "string") return ownPath(image.url);
  return safeUrl(image.url);
}

function images(job) {
  return (job.result && Array.isArray(job.result.images) && job.result.images) || [];
}

function thumbnail(job, size = "thumb") {
  const src = imageSource(images(job)[0]);
  if (!src) {
    return h("span", { class: `${size} placeholder`, "aria-hidden": "true", dataset: { status: job.status } });
  }
  const img = h("img", { class: size, src, alt: "", loading: "lazy", decoding: "async", referrerpolicy: "no-referrer" });
  img.addEventListener("error", () => {
    img.replaceWith(h("span", { class: `${size} placeholder`, "aria-hidden": "true", dataset: { status: "broken" } }));
  });
  return img;
}

function jobPath(id) {
  return `/dashboard/jobs/${encodeURIComponent(id)}`;
}

// ---------------------------------------------------------------------------------------------------
// The API

class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

function toLogin() {
  const next = location.pathname + location.search;
  location.assign(`/dashboard/login?next=${encodeURIComponent(next)}`);
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") Object.assign(headers, CSRF);
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiFailure(0, "network", "jobhook cannot be reached");
  }
  if (response.status === 401 && document.documentElement.dataset.auth === "on") {
    toLogin();
    throw new ApiFailure(401, "unauthorized", "signed out");
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiFailure(response.status, error.code, error.message);
  }
  return data;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value) search.set(key, value);
  const text = search.toString();
  return text ? `?${text}` : "";
}

let providerNames = null;
async function loadProviderNames() {
  if (!providerNames) {
    providerNames = api("/v1/providers")
      .then((data) => data.providers.map((p) => p.provider))
      .catch(() => {
        providerNames = null;
        return [];
      });
  }
  return providerNames;
}

// ---------------------------------------------------------------------------------------------------
// The live stream: one EventSource for the whole app, dispatched to the page on screen.

let current = null;
let source = null;
let reconnectTimer = 0;
let missed = false; // the stream broke: whatever is on screen may be stale once it is back
let streamOpened;
const streamReady = new Promise((resolve) => {
  streamOpened = resolve;
  setTimeout(resolve, 2000); // never hold the first load back for long
});

function setLive(state, text) {
  liveBadge.dataset.state = state;
  liveBadge.querySelector(".live-text").textContent = text || state;
}

function connect() {
  clearTimeout(reconnectTimer);
  const stream = new EventSource("/v1/stream");
  source = stream;
  stream.addEventListener("open", () => {
    setLive("live");
    streamOpened();
    if (missed && current) current.resync(); // changes may have been missed while disconnected
    missed = false;
  });
  stream.addEventListener("job", (event) => {
    let job;
    try {
      job = JSON.parse(event.data);
    } catch {
      return;
    }
    if (current && job && typeof job.id === "string") current.job(job);
  });
  stream.addEventListener("resync", () => current && current.resync());
  stream.addEventListener("error", () => {
    missed = true;
    streamOpened();
    if (stream.readyState === EventSource.CLOSED) {
      // Refused outright (e.g. the session ended): find out why, and try again later.
      setLive("offline");
      api("/v1/providers").catch(() => {});
      reconnectTimer = setTimeout(connect, 5000);
    } else {
      setLive("reconnecting"); // the browser retries by itself
    }
  });
}

// ---------------------------------------------------------------------------------------------------
// Pages

function pageHeader(title, ...extra) {
  return h("div", { class: "page-head" }, h("h1", null, title), ...extra);
}

function failure(error) {
  return h("p", { class: "notice tone-bad", role: "alert" }, `Could not load: ${error.message}`);
}

/** The jobs list: newest first, filters in the URL, rows added and changed in place from the stream. */
function jobsPage() {
  const params = new URLSearchParams(location.search);
  const filters = {
    status: STATUSES.includes(params.get("status")) ? params.get("status") : "",
    provider: params.get("provider") || "",
  };
  const rows = new Map(); // id → {job, el}
  let nextCursor = null;
  let generation = 0;
  let held = []; // changes that came while a page of the list was being read: applied after it
  let loading = true;

  const statusSelect = h(
    "select",
    { id: "filter-status", name: "status" },
    h("option", { value: "" }, "All statuses"),
    STATUSES.map((s) => h("option", { value: s }, label(s))),
  );
  statusSelect.value = filters.status;
  const providerSelect = h(
    "select",
    { id: "filter-provider", name: "provider" },
    h("option", { value: "" }, "All providers"),
  );
  if (filters.provider) providerSelect.append(h("option", { value: filters.provider }, filters.provider));
  providerSelect.value = filters.provider;

  const list = h("div", { class: "jobs", id: "jobs" });
  const empty = h("p", { class: "empty", hidden: true }, "No jobs yet.");
  const more = h("button", { class: "btn", type: "button", hidden: true }, "Load more");
  const problem = h("div");

  const form = h(
    "form",
    { class: "filters", role: "search" },
    h("span", { class: "field" }, h("label", { for: "filter-status" }, "Status"), statusSelect),
    h("span", { class: "field" }, h("label", { for: "filter-provider" }, "Provider"), providerSelect),
  );
  form.addEventListener("submit", (event) => event.preventDefault());
  for (const select of [statusSelect, providerSelect]) {
    select.addEventListener("change", () => {
      filters.status = statusSelect.value;
      filters.provider = providerSelect.value;
      history.replaceState(null, "", `/dashboard${query(filters)}`);
      reload();
    });
  }
  more.addEventListener("click", () => load(nextCursor));

  const columns = h(
    "div",
    { class: "job-columns", "aria-hidden": "true" },
    h("span", null, "Prompt"),
    h("span", { class: "job-meta" }, ["Provider", "Tier", "Status", "Duration", "Cost"].map((c) => h("span", { class: "cell" }, c))),
  );
  viewRoot.append(pageHeader("Jobs", h("span", { class: "muted" }, "newest first · live")), form, problem, columns, list, empty, more);

  loadProviderNames().then((names) => {
    for (const name of names) {
      if (name !== filters.provider) providerSelect.append(h("option", { value: name }, name));
    }
  });

  function matches(job) {
    return (!filters.status || job.status === filters.status) && (!filters.provider || job.provider === filters.provider);
  }

  function row(job) {
    const finished = FINISHED.has(job.status);
    return h(
      "a",
      {
        class: "job",
        href: jobPath(job.id),
        "data-link": true,
        dataset: { jobId: job.id, status: job.status },
      },
      thumbnail(job),
      h(
        "span",
        { class: "job-main" },
        h("span", { class: "job-prompt", title: prompt(job) }, prompt(job) || "(no prompt)"),
        h(
          "span",
          { class: "job-sub" },
          idCode(job.id),
          " · ",
          h("time", { datetime: job.created_at, title: stamp(job.created_at), dataset: { ago: job.created_at } }, ago(job.created_at)),
        ),
      ),
      h(
        "span",
        { class: "job-meta" },
        h("span", { class: "cell provider", title: "provider" }, job.provider),
        h("span", { class: "cell tier", title: "tier" }, tier(job)),
        h("span", { class: "cell status" }, badge(job.status)),
        h("span", { class: "cell duration", title: "duration", dataset: finished ? {} : { running: job.created_at } }, duration(job)),
        h("span", { class: "cell cost", title: "cost", dataset: job.cost_usd === null ? { empty: "" } : {} }, money(job.cost_usd)),
      ),
    );
  }

  function render(job, flash) {
    const el = row(job);
    if (flash) el.classList.add("flash");
    return el;
  }

  function syncEmpty() {
    empty.hidden = rows.size > 0;
    columns.hidden = rows.size === 0;
    empty.textContent = filters.status || filters.provider ? "No jobs match these filters." : "No jobs yet.";
  }

  async function load(cursor) {
    const mine = ++generation;
    loading = true;
    try {
      const data = await api(`/v1/jobs${query({ ...filters, limit: String(PAGE_SIZE), cursor })}`);
      if (mine !== generation) return;
      loading = false;
      clear(problem);
      if (!cursor) {
        rows.clear();
        clear(list);
      }
      for (const job of data.jobs) {
        if (rows.has(job.id)) continue;
        const el = render(job, false);
        rows.set(job.id, { job, el });
        list.append(el);
      }
      nextCursor = data.next_cursor;
      more.hidden = !nextCursor;
      syncEmpty();
      const replay = held;
      held = [];
      for (const job of replay) upsert(job);
    } catch (error) {
      if (mine !== generation) return;
      loading = false;
      held = [];
      clear(problem);
      problem.append(failure(error));
    }
  }

  function reload() {
    nextCursor = null;
    return load(null);
  }

  function upsert(job) {
    if (loading) {
      held.push(job);
      return;
    }
    const known = rows.get(job.id);
    if (known && String(job.updated_at) < String(known.job.updated_at)) return; // older than what is shown
    if (!matches(job)) {
      if (known) {
        known.el.remove();
        rows.delete(job.id);
        syncEmpty();
      }
      return;
    }
    if (known) {
      if (JSON.stringify(job) === JSON.stringify(known.job)) return; // an event that changed nothing shown
      const el = render(job, job.status !== known.job.status);
      known.el.replaceWith(el);
      rows.set(job.id, { job, el });
      return;
    }
    // Newest first: a job older than the last row loaded belongs to a page not shown yet.
    const last = list.lastElementChild;
    if (nextCursor && last && job.id < last.dataset.jobId) return;
    const el = render(job, true);
    const after = [...list.children].find((child) => child.dataset.jobId < job.id);
    list.insertBefore(el, after || null);
    rows.set(job.id, { job, el });
    syncEmpty();
  }

  const ticker = setInterval(() => {
    for (const cell of list.querySelectorAll("[data-running]")) {
      const entry = rows.get(cell.closest("[data-job-id]").dataset.jobId);
      if (entry) cell.textContent = duration(entry.job);
    }
    for (const time of list.querySelectorAll("[data-ago]")) time.textContent = ago(time.dataset.ago);
  }, 1000);

  streamReady.then(() => reload());
  return {
    name: "jobs",
    job: upsert,
    resync: reload,
    unmount: () => clearInterval(ticker),
  };
}

function describe(event) {
  const d = event.detail || {};
  const parts = [];
  const add = (...texts) => parts.push(...texts.filter((t) => t !== null && t !== undefined && t !== ""));
  const reason = d.code ? `${d.code}${d.message ? ` — ${d.message}` : ""}` : d.message;
  switch (event.type) {
    case "created":
      return {
        title: "Created",
        text: d.submitted_by === "backend" ? "tracked; the backend submits it" : `for ${d.provider ?? "the provider"}`,
      };
    case "submit":
      add(d.provider_task_id && `task ${d.provider_task_id}`, d.http_status && `HTTP ${d.http_status}`, reason);
      return { title: "Submission", text: parts.join(" · ") };
    case "status":
      return { title: "Status", text: `${label(d.from ?? "?")} → ${label(event.outcome)}${d.by ? ` (by ${d.by})` : ""}` };
    case "callback":
      if (event.outcome === "summary") {
        const counts = Object.entries(d.counts || {}).map(
          ([outcome, codes]) => `${outcome}: ${Object.entries(codes).map(([code, n]) => `${code} ×${n}`).join(", ")}`,
        );
        add(`${d.count ?? "?"} more refused or duplicate deliveries, counted here`, ...counts);
        add(d.last_at && `last ${stamp(d.last_at)}`);
        return { title: "Callbacks (summary)", text: parts.join(" · ") };
      }
      if (event.outcome === "refused") add(`refused: ${reason || "no reason given"}`);
      else if (event.outcome === "duplicate") add("already seen: answered “duplicate”, job unchanged");
      add(d.event || d.status, d.effect && d.effect !== "applied" ? d.effect : null);
      if (event.outcome === "accepted" && d.effect === "applied") add("applied");
      return { title: "Callback", text: parts.join(" · ") };
    case "poll":
    case "confirm":
      add(`provider says ${label(event.outcome)}`, d.http_status && `HTTP ${d.http_status}`, reason, d.reason);
      return { title: event.type === "confirm" ? "Confirming poll" : "Poll", text: parts.join(" · ") };
    case "notification": {
      const where = d.destination || (Array.isArray(d.destinations) ? d.destinations.join(", ") : "");
      add(where ? `${d.type ?? "notification"} → ${where}` : d.type, d.attempt && `attempt ${d.attempt}`, d.error, reason);
      return { title: "Notification", text: parts.join(" · ") };
    }
    case "mirror":
      add(Array.isArray(d.images) && `images ${d.images.map((i) => i + 1).join(", ")}`);
      add(d.attempt && `attempt ${d.attempt}`, d.error, reason);
      return { title: "Image copy", text: parts.join(" · ") };
    case "conflict":
      return { title: "Conflict", text: `${label(d.reported ?? "?")} reported after ${label(d.kept ?? "?")}; the first stands` };
    case "budget":
      return { title: "Budget", text: d.message || `waiting for the ${d.scope ?? ""} budget to reset at ${stamp(d.reset_at)}` };
    default:
      for (const [key, value] of Object.entries(d).slice(0, 4)) {
        if (value !== null && typeof value !== "object") add(`${label(key)}: ${value}`);
      }
      return { title: label(event.type).replace(/^./, (c) => c.toUpperCase()), text: parts.join(" · ") };
  }
}

/** A job's history, following `next_cursor` page after page up to EVENTS_SHOWN events; `more`: some are left. */
const EVENTS_PAGE = 500;
const EVENTS_SHOWN = 2000;
async function jobEvents(id) {
  const events = [];
  let cursor = null;
  do {
    const query = new URLSearchParams({ limit: String(EVENTS_PAGE) });
    if (cursor) query.set("cursor", cursor);
    const page = await api(`/v1/jobs/${encodeURIComponent(id)}/events?${query}`);
    events.push(...page.events);
    cursor = page.next_cursor || null;
  } while (cursor && events.length < EVENTS_SHOWN);
  return { events, more: Boolean(cursor) };
}

/** One job: its facts, its images, and its timeline (submission, callbacks, polls, notifications). */
function jobPage(id) {
  const head = h("div");
  const body = h("div");
  viewRoot.append(h("a", { class: "back", href: "/dashboard", "data-link": true }, "← Jobs"), head, body);
  let generation = 0;
  let gone = false;

  function fact(term, ...value) {
    return h("div", { class: "fact" }, h("dt", null, term), h("dd", null, ...value));
  }

  function render(job, events, more) {
    clear(head);
    clear(body);
    document.title = `${label(job.status)} · ${prompt(job).slice(0, 40)} · jobhook`;
    head.append(
      h(
        "div",
        { class: "page-head job-head" },
        h("h1", { class: "job-title" }, prompt(job) || "(no prompt)"),
        h("span", { id: "job-status", dataset: { status: job.status } }, badge(job.status)),
      ),
    );
    const facts = h(
      "dl",
      { class: "facts" },
      fact("Job", idCode(job.id)),
      fact("Provider", job.provider),
      fact("Tier", tier(job)),
      fact("Duration", duration(job)),
      fact("Cost", money(job.cost_usd)),
      fact("Resolved by", job.resolved_by || "—"),
      fact("Task id", job.provider_task_id ? idCode(job.provider_task_id) : "—"),
      fact("Callback URL", job.callback_url_registered ? "registered" : "none (polling)"),
      fact("Created", h("time", { datetime: job.created_at }, stamp(job.created_at))),
      fact("Finished", job.finished_at ? h("time", { datetime: job.finished_at }, stamp(job.finished_at)) : "—"),
    );
    if (job.error) {
      facts.append(fact("Error", h("span", { class: "error-text" }, `${job.error.code}: ${job.error.message}`)));
    }
    if (job.metadata && Object.keys(job.metadata).length) {
      facts.append(fact("Metadata", h("code", null, JSON.stringify(job.metadata))));
    }
    if (Array.isArray(job.attempts) && job.attempts.length > 1) {
      // Failover (SPEC §8): each provider tried, oldest first, with how its attempt ended.
      const tried = h("ol", { class: "attempts", id: "attempts" });
      for (const item of job.attempts) {
        const why = item.error ? ` · ${item.error.provider_code || item.error.code}: ${item.error.message}` : "";
        tried.append(
          h("li", { dataset: { state: item.state ?? "" } }, `${item.provider} `, badge(item.state || "sending"), why),
        );
      }
      facts.append(fact("Attempts", tried));
    }

    const gallery = h("div", { class: "gallery" });
    images(job).forEach((image, index) => {
      const src = imageSource(image);
      if (!src) return;
      const own = typeof image.mirror_url === "string" || Boolean(image.content_type);
      gallery.append(
        h(
          "figure",
          null,
          h(
            "a",
            { href: src, target: "_blank", rel: "noopener noreferrer" },
            h("img", { src, alt: `Image ${index + 1} of the job`, loading: "lazy", referrerpolicy: "no-referrer" }),
          ),
          h("figcaption", null, `Image ${index + 1} · ${own ? "jobhook's copy" : "provider URL"}`),
        ),
      );
    });
    if (!gallery.childElementCount) {
      gallery.append(h("p", { class: "empty" }, FINISHED.has(job.status) ? "No images." : "No images yet."));
    }

    const timeline = h("ol", { class: "timeline", id: "timeline" });
    for (const event of events) {
      const { title, text } = describe(event);
      const detail = event.detail && Object.keys(event.detail).length ? event.detail : null;
      timeline.append(
        h(
          "li",
          { class: `event tone-${tone(event.outcome)}`, dataset: { type: event.type, outcome: event.outcome ?? "" } },
          h("time", { class: "event-time", datetime: event.at, title: stamp(event.at) }, clock(event.at)),
          h(
            "div",
            { class: "event-body" },
            h("div", { class: "event-line" }, h("strong", null, title), event.outcome ? badge(event.outcome) : null),
            text ? h("div", { class: "event-text" }, text) : null,
            detail ? h("details", null, h("summary", null, "details"), h("pre", null, JSON.stringify(detail, null, 2))) : null,
          ),
        ),
      );
    }
    if (!events.length) timeline.append(h("li", { class: "empty" }, "Nothing recorded yet."));
    if (more) {
      timeline.append(
        h(
          "li",
          { class: "empty", id: "timeline-more" },
          `Only the first ${events.length} events are shown; `,
          h("code", null, `jobhook job ${job.id}`),
          " prints them all.",
        ),
      );
    }

    body.append(
      h("section", { class: "card" }, facts),
      h("section", { class: "card" }, h("h2", null, "Images"), gallery),
      h("section", { class: "card" }, h("h2", null, "Timeline ", h("span", { class: "muted small" }, "times in UTC")), timeline),
    );
  }

  async function load() {
    const mine = ++generation;
    try {
      const [job, history] = await Promise.all([api(`/v1/jobs/${encodeURIComponent(id)}`), jobEvents(id)]);
      if (mine === generation) render(job, history.events, history.more);
    } catch (error) {
      if (mine !== generation) return;
      clear(head);
      clear(body);
      if (error.status === 404) {
        gone = true;
        document.title = "Job not found · jobhook";
        head.append(pageHeader("Job not found"));
        body.append(h("p", { class: "empty" }, "No job ", h("code", null, id), " here. It may have been purged."));
      } else {
        body.append(failure(error));
      }
    }
  }

  const refresh = debounce(load, 250);
  streamReady.then(load);
  return {
    name: "job",
    job: (job) => {
      if (job.id === id && !gone) refresh();
    },
    resync: load,
    unmount: () => refresh.cancel(),
  };
}

/** What the CLI says where a provider lists no price: the simulator costs nothing; segmind does not say. */
/** A provider's prices per image, as `jobhook providers` says them; "(set)" when JOBHOOK_<P>_PRICES gave them. */
function priceText(p) {
  const entries = Object.entries(p.prices_usd || {});
  if (!entries.length) return "not published";
  const values = new Set(entries.map(([, price]) => Number(price)));
  let shown;
  if (values.size === 1 && values.has(0)) shown = "free";
  else if (values.size === 1 && entries.length === 3) shown = `any tier ${money(entries[0][1])}`;
  else shown = entries.map(([speed, price]) => `${speed} ${money(price)}`).join(" · ");
  return p.prices_overridden ? `${shown} (set)` : shown;
}

/** Today's budget (SPEC §9): each cap, what is spent and reserved, what is left, when it resets. */
function budgetPanel(report) {
  const scopes = [report.total, ...report.providers].filter(
    (s) => s.scope === "total" || s.cap_usd !== null || s.spent_usd > 0 || s.reserved_usd > 0,
  );
  const capped = scopes.some((s) => s.cap_usd !== null);
  const tiles = scopes.map((s) => {
    const state = s.cap_usd === null ? "no cap" : s.exhausted_at ? "exhausted" : "ok";
    const used = s.spent_usd + s.reserved_usd;
    return h(
      "div",
      { class: "budget-scope", dataset: { scope: s.scope, state } },
      h("div", { class: "budget-head" }, h("strong", null, s.scope === "total" ? "All providers" : s.scope), badge(state)),
      h("div", { class: "budget-spent" }, `${money(s.spent_usd)} spent · ${money(s.reserved_usd)} reserved`),
      s.cap_usd === null
        ? null
        : [
            h("progress", { max: String(Math.max(s.cap_usd, 0.000001)), value: String(Math.min(used, s.cap_usd)), title: `${money(used)} of ${money(s.cap_usd)}` }),
            h("div", { class: "budget-left" }, `of ${money(s.cap_usd)} · ${money(s.remaining_usd)} left`),
          ],
      s.exhausted_at ? h("div", { class: "muted small" }, `refused work since ${stamp(s.exhausted_at)}`) : null,
      s.note ? h("div", { class: "muted small" }, s.note) : null,
    );
  });
  const reset = `resets ${stamp(report.reset_at)} (in ${span(report.retry_after)})`;
  return [
    h("div", { class: "provider-head" }, h("h2", null, "Budget today"), h("span", { class: "muted small", id: "budget-reset" }, reset)),
    capped ? null : h("p", { class: "muted small" }, "No cap is set (JOBHOOK_BUDGET_USD_PER_DAY, JOBHOOK_<P>_BUDGET_USD_PER_DAY): spend is counted all the same."),
    h("div", { class: "budget-scopes" }, tiles),
  ].filter(Boolean);
}

/** Providers: today's budget, callback health, credits left, jobs and cost today. */
function providersPage() {
  const grid = h("div", { class: "providers", id: "providers" });
  const spend = h("section", { class: "card budget", id: "budget" });
  const problem = h("div");
  viewRoot.append(pageHeader("Providers", h("span", { class: "muted" }, "today is UTC")), problem, spend, grid);

  function card(p) {
    const credits = p.credits === null || p.credits === undefined ? "—" : String(p.credits);
    return h(
      "section",
      { class: "card provider-card", dataset: { provider: p.provider } },
      h(
        "div",
        { class: "provider-head" },
        h("h2", null, p.provider),
        p.configured ? badge("ok", "configured") : badge("neutral", "not configured"),
      ),
      h(
        "dl",
        { class: "facts" },
        h("div", { class: "fact" }, h("dt", null, "Tracked by"), h("dd", null, p.tracking)),
        h(
          "div",
          { class: "fact" },
          h("dt", null, "Callbacks"),
          h(
            "dd",
            { class: "callbacks", dataset: { health: p.callbacks } },
            CALLBACK_TRACKING.has(p.tracking) || p.callbacks !== "ok" ? badge(p.callbacks) : h("span", { class: "muted" }, "none"),
            p.polled_in_a_row ? ` ${p.polled_in_a_row} finished by polling in a row` : null,
          ),
        ),
        h("div", { class: "fact" }, h("dt", null, "Circuit"), circuitFact(p.circuit)),
        h(
          "div",
          { class: "fact" },
          h("dt", null, "Credits left"),
          h("dd", { class: "credits" }, credits, p.credits_low ? [" ", badge("low")] : null),
        ),
        h("div", { class: "fact" }, h("dt", null, "Jobs today"), h("dd", { class: "today-jobs" }, String(p.today?.jobs ?? 0))),
        h("div", { class: "fact" }, h("dt", null, "Cost today"), h("dd", { class: "today-cost" }, money(p.today?.cost_usd ?? 0))),
        h("div", { class: "fact" }, h("dt", null, "Latency p50 / p90"), h("dd", { class: "latency" }, latencyText(p))),
        h("div", { class: "fact" }, h("dt", null, "Success rate"), h("dd", { class: "success-rate" }, successText(p))),
        h("div", { class: "fact" }, h("dt", null, "Price per image"), h("dd", { class: "price", title: p.prices_overridden ? `set by JOBHOOK_${p.provider.toUpperCase()}_PRICES` : "as published" }, priceText(p))),
      ),
      p.configured ? null : h("p", { class: "muted small" }, p.api_key),
    );
  }

  // Measured over the provider's last 100 finished jobs (SPEC §8); "—" until one finished.
  function latencyText(p) {
    if (p.latency_p50_s === null || p.latency_p50_s === undefined) return "—";
    return `${p.latency_p50_s}s / ${p.latency_p90_s}s`;
  }
  function successText(p) {
    if (p.success_rate === null || p.success_rate === undefined) return "—";
    return `${Math.round(p.success_rate * 100)}% of ${p.jobs_measured}`;
  }

  // Open: nothing is sent until `until`; half-open: one job tries it (SPEC §8).
  function circuitFact(c) {
    const state = c?.state ?? "closed";
    const parts = [badge(state)];
    if (state === "open" && c.until) parts.push(` until ${stamp(c.until)}`);
    if (state === "half_open") parts.push(c.probing ? " one job trying it" : " the next job tries it");
    if (c?.failures_in_a_row) parts.push(` · ${c.failures_in_a_row} failed in a row${c.reason ? ` (${c.reason})` : ""}`);
    return h("dd", { class: "circuit", dataset: { state } }, parts);
  }

  async function load() {
    try {
      const [data, report] = await Promise.all([api("/v1/providers"), api("/v1/budget")]);
      clear(problem);
      clear(spend);
      spend.append(...budgetPanel(report));
      clear(grid);
      const sorted = [...data.providers].sort((a, b) => Number(b.configured) - Number(a.configured));
      for (const p of sorted) grid.append(card(p));
    } catch (error) {
      clear(problem);
      problem.append(failure(error));
    }
  }

  const refresh = debounce(load, 1000);
  const timer = setInterval(load, 30000);
  streamReady.then(load);
  return { name: "providers", job: refresh, resync: load, unmount: () => (clearInterval(timer), refresh.cancel()) };
}

/** The outbox: deliveries by state (dead first), each with a resend button. */
function outboxPage() {
  const params = new URLSearchParams(location.search);
  let status = OUTBOX_STATUSES.includes(params.get("status")) ? params.get("status") : params.get("status") === "all" ? "" : "dead";
  const select = h(
    "select",
    { id: "outbox-status", name: "status" },
    OUTBOX_STATUSES.map((s) => h("option", { value: s }, label(s))),
    h("option", { value: "all" }, "all"),
  );
  select.value = status || "all";
  const summary = h("div", { class: "summary", id: "outbox-summary" });
  const list = h("div", { class: "deliveries", id: "deliveries", role: "list" });
  const problem = h("div");
  const resendAll = h("button", { class: "btn", type: "button", hidden: true, id: "resend-all" }, "Resend all shown");
  const form = h(
    "form",
    { class: "filters" },
    h("span", { class: "field" }, h("label", { for: "outbox-status" }, "Deliveries"), select),
    resendAll,
  );
  form.addEventListener("submit", (event) => event.preventDefault());
  viewRoot.append(pageHeader("Outbox"), summary, form, problem, list);
  let shown = [];

  select.addEventListener("change", () => {
    status = select.value === "all" ? "" : select.value;
    history.replaceState(null, "", `/dashboard/outbox${query({ status: select.value === "dead" ? "" : select.value })}`);
    load();
  });

  async function resend(ids, button) {
    if (!ids.length) return;
    if (button) button.disabled = true;
    try {
      const data = await api("/v1/outbox/resend", { method: "POST", body: { ids } });
      const count = data.resent.length;
      toast(count === 1 ? `Delivery #${data.resent[0]} sent again.` : `${count} deliveries sent again.`, "good");
    } catch (error) {
      toast(`Resend failed: ${error.message}`, "bad");
      if (button) button.disabled = false;
    }
    await load();
  }
  resendAll.addEventListener("click", () => resend(shown.filter((d) => d.status !== "pending").map((d) => d.id), resendAll));

  function delivery(d) {
    const button =
      d.status === "pending"
        ? null
        : h("button", { class: "btn btn-small resend", type: "button", "aria-label": `Resend #${d.id}` }, "Resend");
    if (button) button.addEventListener("click", () => resend([d.id], button));
    return h(
      "div",
      { class: "card delivery", role: "listitem", dataset: { deliveryId: String(d.id), status: d.status } },
      h(
        "div",
        { class: "delivery-head" },
        h("strong", null, d.type || "notification"),
        badge(d.status),
        h("span", { class: "muted" }, `#${d.id} → ${d.destination}`),
        button,
      ),
      h(
        "div",
        { class: "delivery-meta" },
        d.job_id
          ? h("a", { href: jobPath(d.job_id), "data-link": true }, idCode(d.job_id))
          : d.provider && `provider ${d.provider}`,
        h("span", null, `${d.attempts} attempt${d.attempts === 1 ? "" : "s"}`),
        h("time", { title: stamp(d.created_at) }, ago(d.created_at)),
        d.last_status ? h("span", null, `HTTP ${d.last_status}`) : null,
      ),
      d.last_error ? h("div", { class: "error-text" }, d.last_error) : null,
    );
  }

  async function load() {
    try {
      const data = await api(`/v1/outbox${query({ status, limit: "100" })}`);
      clear(problem);
      clear(summary);
      const names = Object.keys({ ...data.destinations, ...data.counts });
      if (!names.length) {
        const variables = "JOBHOOK_SLACK_WEBHOOK_URL, JOBHOOK_SMTP_URL, JOBHOOK_FORWARD_URL";
        summary.append(h("p", { class: "muted" }, `No destination configured (${variables}).`));
      }
      for (const name of names) {
        const counts = data.counts[name] || { pending: 0, dead: 0 };
        const state = data.destinations[name] || {};
        summary.append(
          h(
            "span",
            { class: "chip", dataset: { destination: name } },
            h("strong", null, name),
            ` ${counts.dead} dead · ${counts.pending} pending`,
            state.breaker && state.breaker !== "closed" ? ` · breaker ${state.breaker}` : null,
            state.stopped ? ` · stopped: ${typeof state.stopped === "string" ? state.stopped : JSON.stringify(state.stopped)}` : null,
          ),
        );
      }
      clear(list);
      shown = data.deliveries;
      for (const d of shown) list.append(delivery(d));
      if (!shown.length) list.append(h("p", { class: "empty" }, status ? `No ${status} deliveries.` : "No deliveries."));
      resendAll.hidden = shown.filter((d) => d.status !== "pending").length < 2;
      resendAll.disabled = false;
    } catch (error) {
      clear(problem);
      problem.append(failure(error));
    }
  }

  const refresh = debounce(load, 500);
  const timer = setInterval(load, 5000);
  streamReady.then(load);
  return { name: "outbox", job: refresh, resync: load, unmount: () => (clearInterval(timer), refresh.cancel()) };
}

function notFoundPage() {
  const back = h("a", { href: "/dashboard", "data-link": true }, "Back to the jobs.");
  viewRoot.append(pageHeader("Not found"), h("p", { class: "empty" }, "No such page. ", back));
  return { name: "none", job() {}, resync() {}, unmount() {} };
}

// ---------------------------------------------------------------------------------------------------
// Routing

function route() {
  if (current) current.unmount();
  clear(viewRoot);
  const path = location.pathname.replace(/\/+$/, "");
  let match;
  if (path === "/dashboard") current = jobsPage();
  else if ((match = path.match(/^\/dashboard\/jobs\/([^/]+)$/))) {
    let id;
    try {
      id = decodeURIComponent(match[1]);
    } catch {
      id = match[1];
    }
    current = jobPage(id);
  } else if (path === "/dashboard/providers") current = providersPage();
  else if (path === "/dashboard/outbox") current = outboxPage();
  else current = notFoundPage();
  for (const link of document.querySelectorAll("[data-nav]")) {
    const active = link.dataset.nav === current.name || (current.name === "job" && link.dataset.nav === "jobs");
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const titles = { jobs: "Jobs", job: "Job", providers: "Providers", outbox: "Outbox" };
  document.title = `${titles[current.name] || "Not found"} · jobhook`; // a job's page names it once loaded
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-link]");
  if (!link || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin) return;
  event.preventDefault();
  if (url.pathname + url.search !== location.pathname + location.search) history.pushState(null, "", url.pathname + url.search);
  route();
  window.scrollTo(0, 0);
});
window.addEventListener("popstate", route);

if (document.documentElement.dataset.auth === "on") {
  signOutButton.hidden = false;
  signOutButton.addEventListener("click", async () => {
    signOutButton.disabled = true;
    try {
      await fetch("/dashboard/logout", { method: "POST", headers: CSRF, credentials: "same-origin", redirect: "manual" });
    } finally {
      if (source) source.close();
      location.assign("/dashboard/login");
    }
  });
}

connect();
route();
