// The edgefn console: a small single-page app over the control plane's own API (/v1/...).
// It signs in with an admin token for a session cookie (HttpOnly, SameSite=Strict) and sends
// the session's CSRF token with every change. Everything outside data is built with DOM calls:
// text from the fleet (names, labels, log lines, commit messages) only ever becomes text nodes.
"use strict";

const state = { csrf: null, stream: null, page: 0, filters: { q: "", label: "", state: "" } };
const PAGE = 100;

// ---- DOM and API helpers ---------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function show(...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(...nodes);
}

function toast(text, error) {
  const t = h("div", { class: error ? "error" : "" }, text);
  document.getElementById("toast").append(t);
  setTimeout(() => t.remove(), error ? 8000 : 4000);
}

class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = state.csrf || "";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  if (r.status === 401 && path !== "/console/session") {
    signedOut("Your session ended: sign in again.");
    throw new ApiError(401, json);
  }
  if (!r.ok) throw new ApiError(r.status, json);
  return json;
}

function ago(ms) {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(ms).toISOString().replace("T", " ").slice(0, 16);
}

function when(ms) {
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

const STATE_CLASS = {
  running: "ok", converged: "ok", updating: "warn", downloading: "warn",
  failed: "bad", rolled_back: "bad", crash_loop: "bad", backoff: "warn",
};

// How a device stands against the latest revision, from GET /v1/status's `converged` and
// `held` (the control plane's one rule, also `edgefn status`'s): held at a rollout's baseline
// until its stage, back on the baseline after an aborted or halted rollout, converged, or not.
function convergence(d) {
  const held = d.held;
  if (d.converged && held && (held.rollout === "running" || held.rollout === "paused")) {
    return { cls: "warn", text: `held at revision ${held.revision} until the rollout of ${held.rolloutRevision} reaches it` };
  }
  if (d.converged && held) {
    return { cls: "warn", text: `back on revision ${held.revision} (rollout of ${held.rolloutRevision} ${held.rollout})` };
  }
  return d.converged ? { cls: "ok", text: "✓ converged" } : { cls: "warn", text: "not converged" };
}

function pill(text) {
  return h("span", { class: "pill " + (STATE_CLASS[text] || "") }, text);
}

function deviceState(d) {
  if (!d.registered) return "unregistered";
  if (!d.report) return "never seen";
  return d.report.state || "unknown";
}

function failing(d) {
  const fs = (d.report && d.report.functions) || [];
  return fs.filter((f) => f.state === "crash_loop" || f.state === "backoff" || f.errors > 0);
}

// ---- Session ---------------------------------------------------------------------------------

function signedOut(message) {
  state.csrf = null;
  stopStream();
  document.getElementById("nav").hidden = true;
  const input = h("input", { id: "token", type: "password", autocomplete: "current-password",
    required: true, "aria-describedby": "token-help" });
  const error = h("p", { class: "bad", role: "alert" }, message || "");
  const form = h("form", { class: "card signin", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const r = await api("POST", "/console/session", { token: input.value });
      state.csrf = r.csrf;
      input.value = "";
      signedIn();
    } catch (err) {
      error.textContent = err.status === 401 ? "That token is not an admin token of this control plane." : err.message;
    }
  } },
    h("h1", {}, "Sign in"),
    h("label", { for: "token" }, "Admin token",
      input),
    h("p", { id: "token-help", class: "muted" },
      "The token `edgefn-cloud` wrote at its first start, or one from `edgefn token create`."),
    error,
    h("button", { type: "submit" }, "Sign in"));
  show(form);
  input.focus();
}

function signedIn() {
  document.getElementById("nav").hidden = false;
  route();
}

async function signOut() {
  try { await api("DELETE", "/console/session"); } catch (_) { /* signed out either way */ }
  signedOut("Signed out.");
}

// ---- Live status -----------------------------------------------------------------------------

function stopStream() {
  if (state.stream) { state.stream.close(); state.stream = null; }
}

// Calls `render(status)` now and on every change of the fleet's status: the server sends the
// whole status once (`status`), then only the devices that changed (`delta`).
//
// With `query` (page, size and filters, as GET /v1/status/page takes them), `render(page)` gets
// one page of the fleet and its counts instead, now and whenever they change.
function liveStatus(render, query) {
  stopStream();
  const params = query ? new URLSearchParams(Object.entries(query).filter(([, v]) => v !== "" && v !== undefined)) : null;
  const es = new EventSource(params ? `/console/events?${params}` : "/console/events");
  state.stream = es;
  es.addEventListener("page", (e) => {
    try { render(JSON.parse(e.data)); } catch (err) { toast(err.message, true); }
  });
  let current = null;
  es.addEventListener("status", (e) => {
    try { current = JSON.parse(e.data); render(current); } catch (err) { toast(err.message, true); }
  });
  es.addEventListener("delta", (e) => {
    if (!current) return;
    try {
      const d = JSON.parse(e.data);
      const changed = new Map(d.devices.map((x) => [x.name, x]));
      const removed = new Set(d.removed || []);
      const kept = current.devices.filter((x) => !removed.has(x.name) && !changed.has(x.name));
      current = { revision: d.revision, devices: kept.concat([...changed.values()]) };
      current.devices.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      render(current);
    } catch (err) { toast(err.message, true); }
  });
  es.addEventListener("error", () => {
    if (es.readyState === EventSource.CLOSED) {
      api("GET", "/console/session").then((s) => { if (!s.signedIn) signedOut("Your session ended: sign in again."); })
        .catch(() => {});
    }
  });
}

// ---- Fleet -----------------------------------------------------------------------------------

// The overview is paged and filtered on the server: the page's stream carries one page of
// devices and the whole fleet's counts (`page` events), sent again when they change, so an
// open page costs one page, not the fleet, at 10,000 devices.
function fleetView() {
  const f = state.filters;
  const q = h("input", { id: "f-q", type: "search", value: f.q, placeholder: "name" });
  const label = h("input", { id: "f-label", type: "search", value: f.label, placeholder: "site=shanghai" });
  const st = h("select", { id: "f-state" },
    ["", "running", "updating", "failed", "rolled_back", "never seen", "unregistered", "not converged"]
      .map((s) => h("option", { value: s, selected: s === f.state }, s || "any")));
  const summary = h("p", { class: "muted", id: "fleet-summary", "aria-live": "polite" }, "Loading…");
  const body = h("tbody", { id: "fleet-rows" });
  const pager = h("div", { class: "pager" });
  const render = (p) => {
    const c = p.counts;
    const filtered = f.q || f.label || f.state;
    const states = Object.entries(c.byState || {}).map(([k, v]) => `${k} ${v}`).join(", ");
    summary.textContent = `Revision ${p.revision}: ${c.converged - (c.held || 0)} of ${c.total} devices converged` +
      (c.held ? `, ${c.held} held at the baseline until the rollout reaches them` : "") +
      (filtered ? `; ${p.matching} shown by the filters` : "") + (states ? ` (${states})` : "");
    const pages = Math.max(1, Math.ceil(p.matching / PAGE));
    if (state.page > pages - 1) { state.page = pages - 1; subscribe(); return; }
    body.replaceChildren(...p.devices.map((d) => {
      const r = d.report || {};
      const bad = failing(d);
      return h("tr", { "data-device": d.name },
        h("td", { class: "wrap" }, h("a", { href: "#/devices/" + encodeURIComponent(d.name) }, d.name)),
        h("td", { class: "hide-narrow wrap labels" }, Object.entries(d.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ")),
        h("td", {}, pill(deviceState(d)), " ", ((c) => h("span", { class: c.cls }, c.text))(convergence(d))),
        h("td", {}, r.runningRevision ?? "—"),
        h("td", { class: "hide-narrow" }, ago(d.lastSeenMs)),
        h("td", { class: "hide-narrow" }, r.outbox ? String(r.outbox.pending ?? 0) : "—"),
        h("td", { class: "wrap" }, bad.length ? bad.map((x) => x.binding).join(", ") : h("span", { class: "muted" }, "none")));
    }));
    pager.replaceChildren(
      h("button", { type: "button", class: "secondary", id: "page-prev", disabled: state.page === 0,
        onclick: () => { state.page--; subscribe(); } }, "Previous"),
      h("span", { class: "muted", id: "page-of" }, `page ${state.page + 1} of ${pages}`),
      h("button", { type: "button", class: "secondary", id: "page-next", disabled: state.page >= pages - 1,
        onclick: () => { state.page++; subscribe(); } }, "Next"));
  };
  const subscribe = () => liveStatus(render, { page: state.page, size: PAGE, q: f.q, label: f.label, state: f.state });
  let timer = null;
  const refilter = () => {
    f.q = q.value.trim(); f.label = label.value.trim(); f.state = st.value; state.page = 0;
    clearTimeout(timer);
    timer = setTimeout(subscribe, 200);
  };
  for (const el of [q, label]) el.addEventListener("input", refilter);
  st.addEventListener("change", refilter);
  show(
    h("h1", {}, "Fleet"),
    h("div", { class: "row" },
      h("label", { for: "f-q" }, "Device", q),
      h("label", { for: "f-label" }, "Label", label),
      h("label", { for: "f-state" }, "State", st)),
    summary,
    h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Device"), h("th", { class: "hide-narrow" }, "Labels"), h("th", {}, "State"), h("th", {}, "Running"),
        h("th", { class: "hide-narrow" }, "Last seen"), h("th", { class: "hide-narrow" }, "Outbox"),
        h("th", {}, "Failing functions"))),
      body)),
    pager);
  subscribe();
  state.cleanup = () => clearTimeout(timer);
}

// ---- Device ----------------------------------------------------------------------------------

function deviceView(name) {
  const head = h("div", { class: "card", id: "device-summary" }, "Loading…");
  const fns = h("tbody", { id: "device-functions" });
  const logs = h("div", { class: "logs", id: "device-logs", "aria-live": "off", tabindex: "0" });
  const binding = h("select", { id: "log-binding" }, h("option", { value: "" }, "every function"));
  const follow = h("button", { type: "button", class: "secondary", id: "log-follow" }, "Follow");
  let logAbort = null;
  const bindings = new Set();
  const render = (status) => {
    const d = status.devices.find((x) => x.name === name);
    if (!d) { head.replaceChildren(h("p", { class: "bad" }, `No device named ${name}.`)); return; }
    const r = d.report || {};
    head.replaceChildren(h("dl", { class: "kv" },
      h("dt", {}, "State"), h("dd", {}, pill(deviceState(d)), " ", convergence(d).text.replace("✓ ", "")),
      h("dt", {}, "Labels"), h("dd", {}, Object.entries(d.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "—"),
      h("dt", {}, "Running revision"), h("dd", {}, r.runningRevision ?? "—"),
      h("dt", {}, "Desired digest"), h("dd", {}, d.desiredDigest.slice(0, 12)),
      h("dt", {}, "Last seen"), h("dd", {}, ago(d.lastSeenMs)),
      h("dt", {}, "Message"), h("dd", {}, r.message || "—"),
      h("dt", {}, "Link"), h("dd", {}, r.link ? (r.link.up ? "up" : "down" + (r.link.lastError ? `: ${r.link.lastError}` : "")) : "—")));
    const list = r.functions || [];
    fns.replaceChildren(...list.map((f) => h("tr", {},
      h("td", {}, f.binding), h("td", {}, pill(f.state)), h("td", {}, f.restarts ?? 0),
      h("td", {}, f.invocations ?? 0), h("td", {}, f.errors ?? 0), h("td", { class: "wrap" }, f.lastError || ""))));
    for (const f of list) {
      if (!bindings.has(f.binding)) {
        bindings.add(f.binding);
        binding.append(h("option", { value: f.binding }, f.binding));
      }
    }
  };
  const line = (l) => {
    if (l.line === undefined) {
      const n = l.dropped ?? 0;
      return h("div", { class: "marker" }, `… ${n} lines dropped …`);
    }
    return h("div", { class: l.stream === "stderr" ? "stderr" : "" },
      `${new Date(l.ts_ms ?? l.tsMs ?? Date.now()).toISOString().slice(11, 19)} ${l.binding} | ${l.line}`);
  };
  const loadLogs = async (followIt) => {
    if (logAbort) logAbort.abort();
    logAbort = new AbortController();
    const q = new URLSearchParams({ tail: "200" });
    if (binding.value) q.set("binding", binding.value);
    if (followIt) q.set("follow", "true");
    logs.replaceChildren();
    try {
      const r = await fetch(`/v1/devices/${encodeURIComponent(name)}/logs?${q}`,
        { credentials: "same-origin", signal: logAbort.signal });
      if (!r.ok) throw new Error(`logs: HTTP ${r.status}`);
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          const text = buf.slice(0, i); buf = buf.slice(i + 1);
          if (!text.trim()) continue;
          let l; try { l = JSON.parse(text); } catch (_) { continue; }
          if (l.keepalive) continue;
          logs.append(line(l));
          while (logs.childNodes.length > 2000) logs.firstChild.remove();
          logs.scrollTop = logs.scrollHeight;
        }
      }
      if (!logs.childNodes.length) logs.append(h("div", { class: "muted" }, "No log lines yet."));
    } catch (err) {
      if (err.name !== "AbortError") toast(err.message, true);
    }
  };
  let following = false;
  follow.addEventListener("click", () => {
    following = !following;
    follow.textContent = following ? "Stop following" : "Follow";
    follow.setAttribute("aria-pressed", String(following));
    loadLogs(following);
  });
  binding.addEventListener("change", () => loadLogs(following));

  const topic = h("input", { id: "pub-topic", placeholder: "commands/greet", required: true });
  const payload = h("textarea", { id: "pub-payload", placeholder: '{"name": "Ada"}' });
  const sent = h("p", { class: "muted", id: "pub-result", role: "status" });
  const publish = h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    let body = payload.value;
    try { body = JSON.parse(payload.value); } catch (_) { /* text */ }
    try {
      const r = await api("POST", "/v1/publish", { devices: [name], topic: topic.value, payload: body });
      sent.textContent = `Sent to ${JSON.stringify(r.devices ?? r.sent ?? r)}.`;
    } catch (err) { sent.textContent = ""; toast(err.message, true); }
  } },
    h("h2", {}, "Send a message down"),
    h("p", { class: "muted" }, "Published to the device's cloud topic; a route with `from: \"cloud:…\"` brings it onto the device's bus."),
    h("div", { class: "row" }, h("label", { for: "pub-topic" }, "Topic", topic)),
    h("label", { for: "pub-payload" }, "Payload (JSON, or text)", payload),
    h("div", { class: "row" }, h("button", { type: "submit" }, "Send")),
    sent);

  show(
    h("p", {}, h("a", { href: "#/" }, "← Fleet")),
    h("h1", {}, name),
    head,
    h("h2", {}, "Functions"),
    h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Binding"), h("th", {}, "State"), h("th", {}, "Restarts"),
        h("th", {}, "Invocations"), h("th", {}, "Errors"), h("th", {}, "Last error"))),
      fns)),
    h("h2", {}, "Logs"),
    h("div", { class: "row" }, h("label", { for: "log-binding" }, "Function", binding), follow),
    logs,
    publish,
    invokePanel(name));
  liveStatus(render, { name, size: 1 });
  loadLogs(false);
  state.cleanup = () => { if (logAbort) logAbort.abort(); };
}

// ---- Invoke panel: run a function on the device now (POST /v1/devices/{name}/invoke) ----------

function invokePanel(name) {
  const fn = h("select", { id: "invoke-function", required: true });
  const topic = h("input", { id: "invoke-topic", placeholder: "invoke" });
  const payload = h("textarea", { id: "invoke-payload", placeholder: '{"celsius": 45}' });
  const timeout = h("input", { id: "invoke-timeout", type: "number", min: "1", max: "60", value: "10" });
  const run = h("button", { type: "submit", id: "invoke-run" }, "Invoke");
  const result = h("div", { id: "invoke-result", role: "status", "aria-live": "polite" });
  const triggers = new Map();
  const suggestTopic = () => {
    const t = triggers.get(fn.value) || [];
    topic.placeholder = t.length ? t.join(", ") : "invoke";
    topic.value = t.length === 1 && !/[+#]/.test(t[0]) ? t[0] : "";
  };
  fn.addEventListener("change", suggestTopic);
  api("GET", `/v1/devices/${encodeURIComponent(name)}/desired`).then((d) => {
    const bound = ((d && d.state && d.state.bindings) || []).filter((b) => b.mode !== "continuous");
    for (const b of bound) triggers.set(b.name, b.triggers || []);
    fn.replaceChildren(...bound.map((b) =>
      h("option", { value: b.name }, b.name === b.function ? b.name : `${b.name} (${b.function})`)));
    if (!bound.length) {
      fn.append(h("option", { value: "" }, "no triggered function is bound here"));
      run.disabled = true;
    }
    suggestTopic();
  }).catch((err) => toast(err.message, true));
  const answer = (r) => {
    const out = [];
    if (r.error) {
      out.push(h("p", {}, pill("failed"), " ", h("strong", {}, r.error.kind), `: ${r.error.message}`));
      if (r.error.traceback) out.push(h("pre", { id: "invoke-traceback" }, r.error.traceback));
    } else {
      out.push(h("p", {}, h("span", { class: "pill ok" }, "ok"), ` ${r.binding} answered in ${r.durationMs} ms`));
      const value = r.resultBase64 !== undefined ? { base64: r.resultBase64 } : (r.result ?? null);
      out.push(h("h3", {}, "Result"), h("pre", { id: "invoke-value" }, JSON.stringify(value, null, 2)));
    }
    if ((r.published || []).length) {
      out.push(h("h3", {}, "Published"), h("pre", { id: "invoke-published" },
        r.published.map((m) => `${m.topic} ${JSON.stringify(m.payload)}`).join("\n")));
    }
    out.push(h("h3", {}, "Logs it wrote"));
    const lines = (r.logs || []).map((l) => h("div", { class: l.stream === "stderr" ? "stderr" : "" },
      `${new Date(l.ts_ms ?? Date.now()).toISOString().slice(11, 23)} | ${l.line}`));
    out.push(h("div", { class: "logs", id: "invoke-logs", tabindex: "0" },
      lines.length ? lines : h("div", { class: "muted" }, "No log lines.")));
    if (r.truncated) out.push(h("p", { class: "muted" }, `The device cut its reply to fit: ${r.truncated}`));
    return out;
  };
  return h("form", { class: "card", id: "invoke-panel", onsubmit: async (e) => {
    e.preventDefault();
    let body = payload.value;
    if (!body.trim()) body = null;
    else { try { body = JSON.parse(body); } catch (_) { /* text */ } }
    const seconds = Math.min(60, Math.max(1, Number(timeout.value) || 10));
    run.disabled = true;
    result.replaceChildren(h("p", { class: "muted" }, `Waiting for ${name} (up to ${seconds} s)…`));
    try {
      const req = { function: fn.value, payload: body, timeoutMs: Math.round(seconds * 1000) };
      if (topic.value.trim()) req.topic = topic.value.trim();
      const r = await api("POST", `/v1/devices/${encodeURIComponent(name)}/invoke`, req);
      result.replaceChildren(...answer(r));
    } catch (err) {
      const head = err.code === "device_timeout" ? "No answer in time. " : "";
      result.replaceChildren(h("p", { class: "bad", role: "alert" }, head + err.message));
    } finally {
      run.disabled = false;
    }
  } },
    h("h2", {}, "Invoke a function"),
    h("p", { class: "muted" }, "Runs the function on the device now, as a message on its trigger would, and shows its answer and the log lines it wrote. Nothing is queued: an offline device gives a timeout, and the request never runs later."),
    h("div", { class: "row" },
      h("label", { for: "invoke-function" }, "Function", fn),
      h("label", { for: "invoke-topic" }, "Topic", topic),
      h("label", { for: "invoke-timeout" }, "Wait (s)", timeout)),
    h("label", { for: "invoke-payload" }, "Payload (JSON, or text)", payload),
    h("div", { class: "row" }, run),
    result);
}

// ---- Revisions -------------------------------------------------------------------------------

async function revisionsView() {
  show(h("h1", {}, "Revisions"), h("p", { class: "muted" }, "Loading…"));
  const revs = (await api("GET", "/v1/revisions?limit=100")) || [];
  if (!revs.length) {
    show(h("h1", {}, "Revisions"), h("p", { class: "muted" }, "No revision yet: `edgefn apply` makes the first."));
    return;
  }
  show(h("h1", {}, "Revisions"),
    h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "When"), h("th", {}, "Commit"),
        h("th", { class: "hide-narrow" }, "Branch"), h("th", { class: "hide-narrow" }, "Author"), h("th", {}, "Message"))),
      h("tbody", { id: "revision-rows" }, revs.map((r) => {
        const p = r.provenance || {};
        return h("tr", { "data-revision": r.number },
          h("td", {}, h("a", { href: `#/revisions/${r.number}` }, String(r.number))),
          h("td", {}, when(r.createdMs)),
          h("td", {}, p.commit ? p.commit.slice(0, 8) + (p.dirty ? "+" : "") : "—"),
          h("td", { class: "hide-narrow wrap" }, p.branch || "—"),
          h("td", { class: "hide-narrow wrap" }, p.author || "—"),
          h("td", { class: "wrap" }, r.rollbackOf ? `rollback to ${r.rollbackOf}` : (p.message || p.tool || "")));
      })))));
}

async function revisionView(n) {
  const [rev, list] = await Promise.all([api("GET", `/v1/revisions/${n}`), api("GET", "/v1/revisions?limit=1")]);
  const latest = (list && list[0] && list[0].number) || 0;
  const p = rev.provenance || {};
  const result = h("p", { role: "status", id: "rollback-result" });
  const button = h("button", { type: "button", class: "danger", id: "rollback",
    disabled: n === latest, onclick: async () => {
      if (!window.confirm(`Roll the fleet back to revision ${n}? This applies it again as a new revision.`)) return;
      button.disabled = true;
      try {
        const r = await api("POST", "/v1/rollback", { to: n, expectedParent: latest });
        result.textContent = `Revision ${r.revision} now returns the fleet to revision ${n}.`;
        toast(result.textContent);
      } catch (err) {
        button.disabled = false;
        result.textContent = err.status === 409 ? "Someone applied a revision meanwhile: reload and look again." : err.message;
      }
    } }, n === latest ? "This is the latest revision" : `Roll back to revision ${n}`);
  show(
    h("p", {}, h("a", { href: "#/revisions" }, "← Revisions")),
    h("h1", {}, `Revision ${n}`),
    h("div", { class: "card" }, h("dl", { class: "kv" },
      h("dt", {}, "When"), h("dd", {}, when(rev.createdMs)),
      h("dt", {}, "Commit"), h("dd", {}, p.commit || "—"),
      h("dt", {}, "Branch"), h("dd", {}, p.branch || "—"),
      h("dt", {}, "Author"), h("dd", {}, p.author || "—"),
      h("dt", {}, "Message"), h("dd", {}, p.message || "—"),
      h("dt", {}, "Submitted by"), h("dd", {}, p.tool || "—"))),
    h("div", { class: "row" }, button), result,
    h("h2", {}, "Manifest"),
    h("pre", {}, typeof rev.manifest === "string" ? rev.manifest : JSON.stringify(rev.manifest, null, 2)));
}

// ---- Add a device ----------------------------------------------------------------------------

// The agent's configuration for a registered device: what `edgefn device add` writes.
function agentConfig(r) {
  const host = location.hostname.includes(":") ? `[${location.hostname}]` : location.hostname;
  const mqtt = r.mqtt || `mqtt://${host}:${r.mqtt_port || 1883}`;
  return `# edgefn-agent configuration for device \`${r.name}\`. Keep it secret: it holds the device's token.\n` +
    `# Run: edgefn-agent --config ${r.name}.yaml\n` +
    `cloud: ${location.origin}\ndevice: ${r.name}\ntoken: ${r.token}\nmqtt: ${mqtt}\n`;
}

function addDeviceView() {
  const name = h("input", { id: "new-device", required: true, pattern: "[a-z0-9][a-z0-9-]*",
    placeholder: "gw-03", autocomplete: "off" });
  const result = h("div", { id: "new-device-result" });
  const form = h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    result.replaceChildren();
    try {
      const r = await api("POST", "/v1/devices", { name: name.value.trim() });
      const text = agentConfig(r);
      const url = URL.createObjectURL(new Blob([text], { type: "application/yaml" }));
      result.replaceChildren(h("div", { class: "card" },
        h("h2", {}, `Device ${r.name} is registered`),
        h("p", { class: "warn" }, "Its token is shown this once and the control plane keeps only its hash: download the file now, and keep it secret."),
        h("p", {}, h("a", { id: "agent-config", href: url, download: `${r.name}.yaml` }, `Download ${r.name}.yaml`)),
        h("pre", { id: "agent-config-text" }, text),
        h("p", { class: "muted" }, "On the device: ", h("code", {}, `edgefn-agent --config ${r.name}.yaml`),
          ". It runs what the manifest binds to it once the device is listed under `devices:` and applied.")));
      name.value = "";
    } catch (err) {
      result.replaceChildren(h("p", { class: "bad", role: "alert" }, err.message));
    }
  } },
    h("h1", {}, "Add a device"),
    h("p", { class: "muted" }, "Registers the device with the control plane and gives you its agent's configuration file, with its own token."),
    h("div", { class: "row" }, h("label", { for: "new-device" }, "Device name", name),
      h("button", { type: "submit" }, "Register")));
  show(form, result);
  name.focus();
}

// ---- Bind, functions, bundles, revision diffs ---------------------------------------------------

function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}

// "site=lab, role=gw" → {site: "lab", role: "gw"}, or null when a part has no "=".
function parseLabels(text) {
  const out = {};
  for (const part of text.split(",").map((s) => s.trim()).filter(Boolean)) {
    const i = part.indexOf("=");
    if (i <= 0) return null;
    out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return Object.keys(out).length ? out : null;
}

// Bind with a click: a function, and a device or a label selector → a new revision made from
// the latest one (POST /v1/bindings, the same commit path and checks as `edgefn apply`).
async function bindView(preset) {
  show(h("h1", {}, "Bind a function"), h("p", { class: "muted" }, "Loading…"));
  const [fns, status, revs] = await Promise.all([api("GET", "/v1/functions"),
    api("GET", "/v1/status"), api("GET", "/v1/revisions?limit=1")]);
  const latest = (revs && revs[0] && revs[0].number) || 0;
  if (!fns.length) {
    show(h("h1", {}, "Bind a function"), h("p", { class: "muted" }, "The latest revision has no function: `edgefn apply` a project first."));
    return;
  }
  const fn = h("select", { id: "bind-function", required: true },
    fns.map((f) => h("option", { value: f.name, selected: f.name === preset }, `${f.name} (${f.runtime})`)));
  const names = status.devices.filter((d) => d.inManifest).map((d) => d.name);
  const list = h("datalist", { id: "bind-devices" }, names.slice(0, 1000).map((n) => h("option", { value: n })));
  const byDevice = h("input", { type: "radio", name: "bind-by", id: "bind-by-device", value: "device", checked: true });
  const byLabels = h("input", { type: "radio", name: "bind-by", id: "bind-by-labels", value: "labels" });
  const device = h("input", { id: "bind-device", list: "bind-devices", autocomplete: "off", placeholder: names[0] || "gw-01" });
  const labels = h("input", { id: "bind-labels", autocomplete: "off", placeholder: "site=shanghai, role=gateway" });
  const result = h("div", { id: "bind-result", role: "status" });
  const button = h("button", { type: "submit", id: "bind-submit" }, "Bind");
  const form = h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    result.replaceChildren();
    let devices;
    if (byLabels.checked) {
      const l = parseLabels(labels.value);
      if (!l) { result.replaceChildren(h("p", { class: "bad", role: "alert" }, "Labels are KEY=VALUE pairs separated by commas.")); return; }
      devices = { labels: l };
    } else {
      if (!device.value.trim()) { result.replaceChildren(h("p", { class: "bad", role: "alert" }, "Name a device.")); return; }
      devices = { names: [device.value.trim()] };
    }
    button.disabled = true;
    try {
      const r = await api("POST", "/v1/bindings", { function: fn.value, devices, expectedParent: latest });
      result.replaceChildren(h("div", { class: "card" },
        h("p", { class: "ok" }, `Revision ${r.revision} runs ${fn.value} on ${r.devices.join(", ")} (binding ${r.binding}).`),
        h("p", { class: "warn" }, "Git does not have this change: add the binding to edgefn.yaml, or the next `edgefn apply` from git refuses without --force (it would undo it)."),
        h("p", {}, r.devices.slice(0, 20).map((d) => h("a", { href: "#/devices/" + encodeURIComponent(d), class: "chip" }, d)))));
    } catch (err) {
      button.disabled = false;
      result.replaceChildren(h("p", { class: "bad", role: "alert" }, err.status === 409
        ? `Someone applied a revision since this page loaded (it was made against revision ${latest}): nothing was changed. ${err.message}. Reload and bind again.`
        : err.message));
    }
  } },
    h("p", { class: "muted" }, `A new revision made from revision ${latest}: its manifest with one binding added, recorded as made in the console, by your admin token.`),
    h("div", { class: "row" }, h("label", { for: "bind-function" }, "Function", fn)),
    h("fieldset", {}, h("legend", {}, "Where"),
      h("div", { class: "row" },
        h("label", { class: "inline", for: "bind-by-device" }, byDevice, "A device"),
        h("label", { for: "bind-device" }, "Device", device)),
      h("div", { class: "row" },
        h("label", { class: "inline", for: "bind-by-labels" }, byLabels, "Devices with labels"),
        h("label", { for: "bind-labels" }, "Labels", labels))),
    list,
    h("div", { class: "row" }, button));
  device.addEventListener("focus", () => { byDevice.checked = true; });
  labels.addEventListener("focus", () => { byLabels.checked = true; });
  show(h("h1", {}, "Bind a function"), form, result);
  fn.focus();
}

async function functionsView() {
  show(h("h1", {}, "Functions"), h("p", { class: "muted" }, "Loading…"));
  const fns = (await api("GET", "/v1/functions")) || [];
  const rows = fns.map((f) => h("tr", { "data-function": f.name },
    h("td", { class: "wrap" }, f.name),
    h("td", {}, f.runtime),
    h("td", { class: "wrap hide-narrow" }, f.bindings.join(", ") || "—"),
    h("td", { class: "wrap" }, f.devices.length
      ? f.devices.slice(0, 20).map((d) => h("a", { href: "#/devices/" + encodeURIComponent(d), class: "chip" }, d))
        .concat(f.devices.length > 20 ? [` and ${f.devices.length - 20} more`] : [])
      : h("span", { class: "muted" }, "none")),
    h("td", {}, f.bundle ? h("a", { href: `#/bundles/${f.bundle}`, class: "bundle" }, f.bundle.slice(0, 12)) : "—"),
    h("td", {}, h("a", { href: "#/bind/" + encodeURIComponent(f.name) }, "Bind…"))));
  show(h("h1", {}, "Functions"),
    h("p", { class: "muted" }, "The latest revision's functions and the devices whose desired state runs them."),
    fns.length ? h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Function"), h("th", {}, "Runtime"), h("th", { class: "hide-narrow" }, "Bindings"),
        h("th", {}, "Devices"), h("th", {}, "Bundle"), h("th", {}, ""))),
      h("tbody", { id: "functions-rows" }, rows)))
      : h("p", { class: "muted" }, "No function yet: `edgefn apply` makes the first revision."));
}

async function bundleView(digest, path) {
  show(h("h1", {}, "Bundle"), h("p", { class: "muted" }, "Loading…"));
  const listing = await api("GET", `/v1/bundles/${encodeURIComponent(digest)}/files`);
  const preview = h("div", { id: "bundle-preview" });
  const rows = listing.files.map((f) => h("tr", { "data-path": f.path },
    h("td", { class: "wrap" }, f.target === undefined
      ? h("a", { href: `#/bundles/${digest}/${encodeURIComponent(f.path)}` }, f.path)
      : `${f.path} → ${f.target}`),
    h("td", {}, f.target === undefined ? bytes(f.size) : "link"),
    h("td", { class: "hide-narrow" }, f.executable ? "0755" : "0644")));
  show(
    h("p", {}, h("a", { href: "#/functions" }, "← Functions")),
    h("h1", {}, "Bundle ", h("code", {}, digest.slice(0, 12))),
    h("p", { class: "muted" }, `${bytes(listing.bytes)} compressed, ${listing.total} entries` +
      (listing.total > listing.files.length ? ` (the first ${listing.files.length} are listed)` : "") + ". Read-only."),
    h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "File"), h("th", {}, "Size"), h("th", { class: "hide-narrow" }, "Mode"))),
      h("tbody", { id: "bundle-files" }, rows))),
    preview);
  if (path) {
    const p = await api("GET", `/v1/bundles/${encodeURIComponent(digest)}/files/${path.split("/").map(encodeURIComponent).join("/")}`);
    preview.replaceChildren(h("h2", {}, p.path),
      p.binary
        ? h("p", { class: "muted", id: "bundle-binary" }, `A binary file of ${bytes(p.size)}: not shown.`)
        : h("pre", { id: "bundle-text", tabindex: "0" }, p.text));
    if (p.truncated && !p.binary) preview.append(h("p", { class: "muted" }, `The beginning of a file of ${bytes(p.size)}.`));
    preview.scrollIntoView();
  }
}

function diffItems(label, names, cls) {
  return names && names.length ? h("li", { class: cls }, `${label}: ${names.join(", ")}`) : null;
}

async function diffView(from, to) {
  show(h("h1", {}, `Revision ${from} → ${to}`), h("p", { class: "muted" }, "Loading…"));
  const [d, a, b] = await Promise.all([api("GET", `/v1/revisions/${from}/diff/${to}`),
    api("GET", `/v1/revisions/${from}`), api("GET", `/v1/revisions/${to}`)]);
  const describe = (r) => {
    const p = r.provenance || {};
    return `${r.number}: ${r.rollbackOf ? `rollback to ${r.rollbackOf}` : (p.message || "")}` +
      (p.commit ? ` (${p.commit.slice(0, 8)})` : p.tool ? ` (${p.tool}${p.author ? ", " + p.author : ""})` : "");
  };
  const rows = d.devices.map((c) => h("tr", { "data-device": c.device },
    h("td", {}, h("a", { href: "#/devices/" + encodeURIComponent(c.device) }, c.device)),
    h("td", {}, pill(c.change)),
    h("td", { class: "wrap" }, h("ul", { class: "changes" },
      diffItems("+ functions", c.functionsAdded, "ok"),
      diffItems("− functions", c.functionsRemoved, "bad"),
      (c.functionsChanged || []).map((x) => h("li", { class: "warn" }, `~ function ${x.name}: ${x.fields.join(", ")}`)),
      diffItems("+ bindings", c.bindingsAdded, "ok"),
      diffItems("− bindings", c.bindingsRemoved, "bad"),
      (c.bindingsChanged || []).map((x) => h("li", { class: "warn" }, `~ binding ${x.name}: ${x.fields.join(", ")}`)),
      diffItems("+ routes", c.routesAdded, "ok"),
      diffItems("− routes", c.routesRemoved, "bad")))));
  show(
    h("p", {}, h("a", { href: "#/revisions" }, "← Revisions")),
    h("h1", {}, `Revision ${from} → ${to}`),
    h("dl", { class: "kv card" }, h("dt", {}, "From"), h("dd", { id: "diff-from" }, describe(a)),
      h("dt", {}, "To"), h("dd", { id: "diff-to" }, describe(b))),
    h("p", { class: "muted", id: "diff-summary" }, `Changed: ${d.devices.length} device${d.devices.length === 1 ? "" : "s"}; unchanged: ${d.unchanged}. Environment changes name the keys, never the values.`),
    d.devices.length ? h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Device"), h("th", {}, "Change"), h("th", {}, "What changes"))),
      h("tbody", { id: "diff-rows" }, rows))) : null);
}

// The "compare two revisions" form on the revisions page.
function compareForm(latest) {
  const from = h("input", { id: "diff-a", type: "number", min: 1, max: latest, value: Math.max(1, latest - 1), required: true });
  const to = h("input", { id: "diff-b", type: "number", min: 1, max: latest, value: latest, required: true });
  return h("form", { class: "row card", id: "compare", onsubmit: (e) => {
    e.preventDefault();
    location.hash = `#/diff/${Number(from.value)}/${Number(to.value)}`;
  } },
    h("label", { for: "diff-a" }, "From revision", from),
    h("label", { for: "diff-b" }, "To revision", to),
    h("button", { type: "submit", id: "compare-submit" }, "Compare"));
}

// The latest revision's progressive rollout (`GET /v1/rollout`): its state, stages and devices,
// with pause, resume and abort through the API's own endpoints. Refreshed every 2 s while shown.
function rolloutPanel() {
  const box = h("section", { class: "card", id: "rollout", "aria-live": "polite" });
  let timer = null;
  const act = (what, label, danger) => h("button", {
    type: "button", id: `rollout-${what}`, class: danger ? "danger" : "",
    onclick: async (e) => {
      if (what === "abort" && !window.confirm("Abort the rollout? Every device goes back to the baseline revision.")) return;
      e.target.disabled = true;
      try { await api("POST", `/v1/rollout/${what}`); } catch (err) { toast(err.message); }
      render();
    } }, label);
  async function render() {
    clearTimeout(timer);
    let r = null;
    try { r = await api("GET", "/v1/rollout"); } catch (err) { if (err.status !== 404) { box.replaceChildren(h("h2", {}, "Rollout"), h("p", { class: "bad" }, err.message)); return; } }
    if (!r) {
      box.replaceChildren(h("h2", {}, "Rollout"), h("p", { class: "muted", id: "rollout-state" }, "The latest revision reached every device at once (no rollout: in its manifest)."));
      return;
    }
    const counts = {};
    for (const d of r.devices) counts[d.state] = (counts[d.state] || 0) + 1;
    const controls = [];
    if (r.state === "running") controls.push(act("pause", "Pause"), act("abort", "Abort", true));
    if (r.state === "paused") controls.push(act("resume", "Resume"), act("abort", "Abort", true));
    box.replaceChildren(
      h("h2", {}, "Rollout"),
      h("p", { id: "rollout-state", "data-state": r.state },
        `Revision ${r.revision} (devices not reached run revision ${r.baseline}): ${r.state}, stage ${r.stage} of ${r.stages.length}` + (r.reason ? `. ${r.reason}` : "")),
      h("div", { class: "scroll" }, h("table", {},
        h("thead", {}, h("tr", {}, h("th", {}, "Stage"), h("th", {}, "Devices it adds"), h("th", {}, "Bake"), h("th", {}, "Failures allowed"))),
        h("tbody", { id: "rollout-stages" }, r.stages.map((st, i) => h("tr", { class: i + 1 === r.stage ? "current" : "" },
          h("td", {}, String(i + 1)),
          h("td", { class: "wrap" }, st.devices.join(", ") || "—"),
          h("td", {}, `${Math.round(st.bakeMs / 1000)} s`),
          h("td", {}, st.maxFailures)))))),
      h("p", { id: "rollout-devices" }, Object.keys(counts).sort().map((k) => `${counts[k]} ${k}`).join(", ")),
      controls.length ? h("div", { class: "row" }, ...controls) : null);
    if (!["completed", "halted", "aborted", "superseded"].includes(r.state)) timer = setTimeout(render, 2000);
  }
  render();
  return { box, stop: () => clearTimeout(timer) };
}

// Adds the rollout panel and the compare form above the revisions table, once it is shown.
async function revisionsWithCompare() {
  await revisionsView();
  const rows = document.getElementById("revision-rows");
  if (!rows) return;
  const latest = Number(rows.firstChild && rows.firstChild.getAttribute("data-revision")) || 1;
  const rollout = rolloutPanel();
  state.cleanup = rollout.stop;
  rows.closest(".scroll").before(rollout.box, compareForm(latest));
}

// ---- Routing ---------------------------------------------------------------------------------

async function route() {
  if (state.cleanup) { state.cleanup(); state.cleanup = null; }
  stopStream();
  if (!state.csrf) return;
  const hash = location.hash.replace(/^#/, "") || "/";
  const parts = hash.split("/").filter(Boolean).map(decodeURIComponent);
  try {
    if (parts[0] === "devices" && parts[1]) deviceView(parts[1]);
    else if (parts[0] === "revisions" && parts[1]) await revisionView(Number(parts[1]));
    else if (parts[0] === "revisions") await revisionsWithCompare();
    else if (parts[0] === "diff" && parts[2]) await diffView(Number(parts[1]), Number(parts[2]));
    else if (parts[0] === "bind") await bindView(parts[1]);
    else if (parts[0] === "functions") await functionsView();
    else if (parts[0] === "bundles" && parts[1]) await bundleView(parts[1], parts.slice(2).join("/"));
    else if (parts[0] === "add-device") addDeviceView();
    else fleetView();
  } catch (err) {
    if (err.status !== 401) show(h("p", { class: "bad", role: "alert" }, err.message));
  }
  document.getElementById("main").focus();
}

window.addEventListener("hashchange", route);
document.getElementById("signout").addEventListener("click", signOut);
api("GET", "/console/session").then((s) => {
  if (s && s.signedIn) { state.csrf = s.csrf; signedIn(); } else signedOut();
}).catch(() => signedOut());
