// The Vigil analyst console: plain JavaScript, no build step, no third-party
// code. It talks to the gateway's HTTP API with the key the user typed; the
// key lives in sessionStorage and travels only in the Authorization header.
"use strict";

const KEY = "vigil.key";
const $ = (sel, root = document) => root.querySelector(sel);

/** Creates an element: el("td", {class: "x"}, "text", child…). */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v == null) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c == null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function say(text) {
  const s = $("#status");
  s.textContent = text;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => (s.textContent = ""), 5000);
}

/** Calls the API; resolves to {status, body}; 401 goes back to the login. */
async function api(method, path, body, contentType) {
  const headers = { Authorization: "Bearer " + sessionStorage.getItem(KEY) };
  if (body !== undefined) headers["Content-Type"] = contentType || "application/json";
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (r.status === 401 && path !== "/v1/me") {
    sessionStorage.removeItem(KEY);
    location.hash = "#/login";
  }
  return { status: r.status, body: json, text };
}

const errorText = (r) => (r.body && r.body.error ? r.body.error.message : `HTTP ${r.status}`);

let me = null; // {name, role}
const ROLES = ["viewer", "analyst", "admin"];
const can = (role) => me && ROLES.indexOf(me.role) >= ROLES.indexOf(role);

// -- views ------------------------------------------------------------------

function loginView(main) {
  const input = el("input", { id: "key", type: "password", autocomplete: "off", required: true, size: 40 });
  const msg = el("p", { class: "bad", role: "alert" });
  const form = el("form", { class: "panel", "aria-labelledby": "login-h" },
    el("h1", { id: "login-h" }, "Log in"),
    el("label", { for: "key" }, "API key"),
    input, " ", el("button", { type: "submit" }, "Log in"), msg,
    el("p", { class: "muted" }, "Create one with: vigil-gateway keys create --name you --role analyst"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, input.value.trim());
    const r = await api("GET", "/v1/me");
    if (r.status !== 200) {
      sessionStorage.removeItem(KEY);
      msg.textContent = errorText(r);
      return;
    }
    me = r.body;
    location.hash = "#/rules";
  });
  main.append(form);
  input.focus();
}

async function rulesView(main) {
  main.append(el("h1", {}, "Rules"));
  const r = await api("GET", "/v1/rules");
  if (r.status !== 200) return main.append(el("p", { class: "bad" }, errorText(r)));
  const rows = r.body.map((x) => el("tr", {},
    el("td", {}, el("a", { href: `#/editor/${encodeURIComponent(x.name)}` }, x.name)),
    el("td", {}, x.status),
    el("td", {}, x.deployed_version ?? "—"),
    el("td", {}, x.mode ? el("span", { class: `badge ${x.mode}` }, x.mode) : "—"),
    el("td", {}, x.latest_version ?? "—"),
    el("td", {}, x.owner ?? "—"),
    el("td", {}, x.updated_at ?? "—")));
  main.append(el("div", { class: "panel" }, el("table", {},
    el("caption", { class: "muted" }, `${r.body.length} rules`),
    el("thead", {}, el("tr", {}, ["Rule", "Status", "Deployed", "Mode", "Latest", "Owner", "Last change"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows))));
}

async function editorView(main, name) {
  main.append(el("h1", {}, name ? `Edit ${name}` : "New rule"));
  const area = el("textarea", { id: "text", class: "code", spellcheck: "false", "aria-describedby": "diags" });
  const diags = el("div", { id: "diags", "aria-live": "polite" });
  const save = el("button", { type: "button", disabled: !can("analyst"),
    title: can("analyst") ? "" : "saving a version needs the analyst role" }, "Save as new version");
  main.append(el("div", { class: "panel" }, el("label", { for: "text" }, "Rule text (.vgl)"), area, diags,
    el("div", { class: "row" }, save)));
  if (name) {
    const v = await api("GET", `/v1/rules/${encodeURIComponent(name)}/versions`);
    if (v.status === 200 && v.body.length) area.value = v.body[v.body.length - 1].text;
  } else {
    area.value = "rule my_rule {\n  severity high\n  key card_id\n  pattern a: Txn -> b: Txn[amount > a.amount * 5]\n  within 10m\n}\n";
  }
  // Diagnostics as you type: the validate endpoint, debounced.
  let timer = null, seq = 0;
  const check = async () => {
    const mine = ++seq;
    const r = await api("POST", "/v1/rules/validate", area.value, "text/plain");
    if (mine !== seq) return; // a newer check is under way
    diags.replaceChildren();
    const list = (r.body && r.body.diagnostics) || [];
    if (r.status === 200 && r.body.ok && !list.length) {
      diags.append(el("p", { class: "ok" }, `compiles: rule ${r.body.rule}`));
    }
    for (const d of list) {
      diags.append(el("p", { class: `diag ${d.severity}` },
        `${d.line}:${d.column} ${d.severity}[${d.code}]: ${d.message}`,
        d.label ? ` — ${d.label}` : "", d.hint ? ` (hint: ${d.hint})` : ""));
    }
    if (r.status !== 200 && !list.length) diags.append(el("p", { class: "bad" }, errorText(r)));
  };
  area.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(check, 300); });
  save.addEventListener("click", async () => {
    const r = await api("POST", "/v1/rules", area.value, "text/plain");
    if (r.status === 201 || r.status === 200) {
      say(`saved ${r.body.rule} version ${r.body.version}${r.body.created ? "" : " (unchanged)"}`);
      location.hash = `#/editor/${encodeURIComponent(r.body.rule)}`;
    } else say(`not saved: ${errorText(r)}`);
  });
  check();
}

async function alertsView(main) {
  main.append(el("h1", {}, "Alerts"));
  const f = {
    rule: el("input", { id: "f-rule", size: 14 }),
    severity: el("select", { id: "f-sev" }, ["", "low", "medium", "high", "critical"].map((s) => el("option", { value: s }, s || "any"))),
    key: el("input", { id: "f-key", size: 14 }),
    mode: el("select", { id: "f-mode" }, el("option", { value: "active" }, "active"), el("option", { value: "shadow" }, "shadow")),
  };
  const go = el("button", { type: "submit" }, "Watch");
  const body = el("tbody");
  const form = el("form", { class: "panel row" },
    el("div", {}, el("label", { for: "f-rule" }, "Rule"), f.rule),
    el("div", {}, el("label", { for: "f-sev" }, "Severity"), f.severity),
    el("div", {}, el("label", { for: "f-key" }, "Key"), f.key),
    el("div", {}, el("label", { for: "f-mode" }, "Mode"), f.mode), go);
  main.append(form, el("div", { class: "panel" }, el("table", {},
    el("thead", {}, el("tr", {}, ["At", "Rule", "Severity", "Key", "Mode", "Id"].map((h) => el("th", { scope: "col" }, h)))),
    body)));
  const row = (a) => el("tr", {}, el("td", {}, a.at), el("td", {}, a.rule), el("td", {}, a.severity),
    el("td", {}, a.key ?? "—"), el("td", {}, a.mode || "active"), el("td", {}, el("code", {}, a.id)));
  let abort = null;
  const watch = async () => {
    if (abort) abort.abort();
    abort = new AbortController();
    body.replaceChildren();
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(f)) if (v.value) q.set(k, v.value);
    // The newest stored first, then the live stream (server-sent events read
    // with fetch: EventSource cannot send the key in a header).
    const past = await api("GET", `/v1/alerts?${q}&limit=50`);
    if (past.status === 200) for (const a of past.body.alerts.map((s) => s.alert || s)) body.append(row(a));
    try {
      const r = await fetch(`/v1/alerts/stream?${q}`, {
        headers: { Authorization: "Bearer " + sessionStorage.getItem(KEY) }, signal: abort.signal });
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const chunk = buf.slice(0, i); buf = buf.slice(i + 2);
          const data = chunk.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
          if (!chunk.includes("event: alert") || !data) continue;
          try { body.prepend(row(JSON.parse(data))); } catch { /* a partial event */ }
        }
      }
    } catch (e) {
      if (e.name !== "AbortError") say(`stream stopped: ${e.message}`);
    }
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); watch(); });
  window.addEventListener("hashchange", () => abort && abort.abort(), { once: true });
  watch();
}

async function auditView(main) {
  main.append(el("h1", {}, "Audit log"));
  const r = await api("GET", "/v1/audit?limit=1000");
  if (r.status !== 200) return main.append(el("p", { class: "bad" }, errorText(r)));
  const rows = r.body.slice().reverse().map((e) => el("tr", {},
    el("td", {}, e.seq), el("td", {}, e.at), el("td", {}, e.actor), el("td", {}, e.action), el("td", {}, e.target)));
  main.append(el("div", { class: "panel" }, el("table", {},
    el("thead", {}, el("tr", {}, ["#", "At", "Who", "Action", "Target"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows))));
}

// -- routing ----------------------------------------------------------------

async function route() {
  const main = $("#main");
  main.replaceChildren();
  const [view, arg] = location.hash.replace(/^#\//, "").split("/");
  if (!sessionStorage.getItem(KEY) || view === "login") {
    me = null;
    $("#nav").hidden = true; $("#logout").hidden = true; $("#who").textContent = "";
    return loginView(main);
  }
  if (!me) {
    const r = await api("GET", "/v1/me");
    if (r.status !== 200) { location.hash = "#/login"; return; }
    me = r.body;
  }
  $("#nav").hidden = false; $("#logout").hidden = false;
  $("#who").textContent = `${me.name} (${me.role})`;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === `#/${view}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const views = { rules: rulesView, editor: editorView, alerts: alertsView, audit: auditView };
  await (views[view] || rulesView)(main, arg && decodeURIComponent(arg));
  main.focus();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#logout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    me = null;
    location.hash = "#/login";
  });
  window.addEventListener("hashchange", route);
  route();
});
