// The Vigil analyst console: plain JavaScript, no build step, no third-party
// code. It talks to the gateway's HTTP API with the key the user typed; the
// key lives in sessionStorage and travels only in the Authorization header.
// The page is served with a strict CSP: no inline scripts and no style
// attributes, so every look comes from classes in app.css and every chart is
// SVG drawn with attributes.
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
  for (const c of children.flat(Infinity)) {
    if (c == null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const SVGNS = "http://www.w3.org/2000/svg";
/** Creates an SVG element (attributes only: the CSP forbids style attributes). */
function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v != null) e.setAttribute(k, v);
  for (const c of children.flat(Infinity)) {
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
  let r;
  try {
    r = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    });
  } catch (e) {
    return { status: 0, body: { error: { message: `network error: ${e.message}` } }, text: "" };
  }
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (r.status === 401 && path !== "/v1/me") {
    sessionStorage.removeItem(KEY);
    location.hash = "#/login";
  }
  return { status: r.status, body: json, text };
}

const errorText = (r) => {
  if (r.body && r.body.error) return r.body.error.message || String(r.body.error);
  if (r.status === 404) return "HTTP 404: not available on this gateway";
  return `HTTP ${r.status}`;
};

let me = null; // {name, role}
const ROLES = ["viewer", "analyst", "admin"];
const can = (role) => me && ROLES.indexOf(me.role) >= ROLES.indexOf(role);
const needs = (role) => (can(role) ? "" : `needs the ${role} role`);
const enc = encodeURIComponent;

// -- formatting -------------------------------------------------------------

/** 252000 → "4m 12s"; 250 → "250ms". */
function fmtDur(ms) {
  if (ms == null || !isFinite(ms)) return "—";
  ms = Math.round(ms);
  if (ms < 1000) return `${ms}ms`;
  const parts = [];
  let s = Math.floor(ms / 1000);
  const rest = ms % 1000;
  for (const [unit, len] of [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]]) {
    const n = Math.floor(s / len);
    s -= n * len;
    if (n) parts.push(`${n}${unit}`);
  }
  if (rest && parts.length < 2) parts.push(`${rest}ms`);
  return parts.slice(0, 2).join(" ");
}

/** An RFC 3339 string as is; epoch milliseconds as RFC 3339. */
function isoish(t) {
  if (typeof t === "number" && isFinite(t)) return new Date(t).toISOString();
  return t == null ? "" : String(t);
}

/** "2026-01-05T10:00:00.000Z" → "2026-01-05 10:00:00Z" in a <time>. */
function when(iso) {
  if (iso == null || iso === "") return "—";
  iso = isoish(iso);
  const s = String(iso).replace("T", " ").replace(/\.000(?=Z|[+-]\d\d:?\d\d$)/, "");
  return el("time", { datetime: String(iso) }, s);
}

const pct = (x) => (x == null || !isFinite(x) ? "—" : `${(x * 100).toFixed(1)}%`);
const count = (x) => (Array.isArray(x) ? x.length : Number(x) || 0);
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

function value(v) {
  if (v == null) return el("span", { class: "muted" }, "—");
  if (typeof v === "object") return el("code", {}, JSON.stringify(v));
  return String(v);
}

const badge = (text, kind) => el("span", { class: `badge ${kind || text}` }, text);
const empty = (text) => el("p", { class: "empty" }, text);
const failure = (text) => el("p", { class: "bad", role: "alert" }, text);

// -- syntax highlighting ----------------------------------------------------

// The words of rule-lang/src/grammar.pest (`keyword`), plus the words of the
// `after match …` clause, which are keywords only there.
const KEYWORDS = new Set(["event", "rule", "pattern", "within", "where", "emit", "suppress",
  "aggregate", "over", "having", "key", "severity", "tags", "description", "after", "not",
  "and", "or", "in", "list"]);
const AFTER_WORDS = new Set(["match", "skip", "past", "last", "to", "next", "no"]);
const SEVERITIES = new Set(["low", "medium", "high", "critical"]);
const TYPES = new Set(["string", "int", "float", "bool", "time"]);
const TOKEN = /(#[^\n]*)|("(?:[^"\\\n]|\\.)*"?)|(\d+(?:ms|s|m|h|d)(?![A-Za-z0-9_]))|(\d+(?:\.\d+)?)|([A-Za-z_][A-Za-z0-9_]*)|(->>|->|=~|==|!=|<=|>=|[<>+\-*/%|?!=])|([{}[\](),:.])|([^\S\n]+|\n)|([\s\S])/gy;

/** Binding names declared in a text: `name: Type` (pattern steps, aggregate). */
function bindingNames(text) {
  const names = new Set();
  const src = text.replace(/#[^\n]*/g, "").replace(/"(?:[^"\\\n]|\\.)*"/g, '""');
  for (const m of src.matchAll(/([A-Za-z_][A-Za-z0-9_]*)\s*:\s*[A-Z][A-Za-z0-9_]*/g)) names.add(m[1]);
  return names;
}

/** Tokenizes `text` into highlighted nodes (spans and text nodes). */
function hlTokens(text, bindings, state = { prev: "", after: false }) {
  const out = [];
  TOKEN.lastIndex = 0;
  let m;
  const span = (cls, t) => out.push(el("span", { class: cls }, t));
  while (TOKEN.lastIndex < text.length && (m = TOKEN.exec(text))) {
    const t = m[0];
    if (m[1]) span("tk-comment", t);
    else if (m[2]) span("tk-string", t);
    else if (m[3]) span("tk-duration", t);
    else if (m[4]) span("tk-number", t);
    else if (m[5]) {
      const next = text.slice(TOKEN.lastIndex).match(/^\s*(\S)/);
      const after = state.after && AFTER_WORDS.has(t);
      if (state.prev === ".") span("tk-field", t);
      else if (KEYWORDS.has(t) || after) span("tk-keyword", t);
      else if (t === "true" || t === "false") span("tk-number", t);
      else if (state.prev === "rule" || state.prev === "event") span("tk-name", t);
      else if (next && next[1] === "(") span("tk-fn", t);
      else if (bindings.has(t)) span("tk-binding", t);
      else if (/^[A-Z]/.test(t)) span("tk-type", t);
      else if (state.prev === "severity" && SEVERITIES.has(t)) span("tk-severity", t);
      else if (state.prev === ":" && TYPES.has(t)) span("tk-type", t);
      else out.push(t);
      state.after = t === "after" || after;
      state.prev = t;
      continue;
    } else if (m[6]) span("tk-op", t);
    else if (m[7]) span("tk-punct", t);
    else out.push(t);
    if (!m[8]) state.prev = t;
  }
  return out;
}

/**
 * Highlights a whole text as one block per line (so a line can be marked).
 * `marks` maps a 1-based line number to a severity ("error"/"warning").
 */
function hlLines(text, marks = new Map(), bindings = bindingNames(text)) {
  const state = { prev: "", after: false };
  return text.split("\n").map((line, i) => {
    const mark = marks.get(i + 1);
    const toks = hlTokens(line, bindings, state);
    return el("span", { class: mark ? `ln mark-${mark}` : "ln" }, toks.length ? toks : " ");
  });
}

/** A read-only highlighted code block. */
const codeBlock = (text, attrs = {}) => el("pre", { class: "code-view", ...attrs }, hlLines(text || ""));

// -- charts -----------------------------------------------------------------

/**
 * A bar chart as SVG. `values`: numbers; `labels`: x labels (same length,
 * "" for none). Returns an <svg role="img"> with a <title> and aria-label.
 */
function barChart(values, labels, { width = 1000, height = 160, label = "", cls = "chart" } = {}) {
  const max = Math.max(1, ...values);
  const left = 36, bottom = 22, top = 8;
  const plotW = width - left - 6, plotH = height - top - bottom;
  const step = plotW / Math.max(1, values.length);
  const bw = Math.max(1, Math.min(step * 0.8, 48)); // a lone bar stays a bar, not a block
  const g = svg("svg", { class: cls, viewBox: `0 0 ${width} ${height}`, width: "100%",
    role: "img", "aria-label": label, preserveAspectRatio: "xMinYMin meet" }, svg("title", {}, label));
  g.append(svg("line", { class: "axis", x1: left, y1: top + plotH + 0.5, x2: width - 6, y2: top + plotH + 0.5 }));
  g.append(svg("text", { class: "tick", x: left - 4, y: top + 8, "text-anchor": "end" }, max));
  g.append(svg("text", { class: "tick", x: left - 4, y: top + plotH, "text-anchor": "end" }, 0));
  values.forEach((v, i) => {
    const h = (v / max) * plotH;
    const x = left + i * step + (step - bw) / 2;
    g.append(svg("rect", { class: v ? "bar" : "bar zero", x: x.toFixed(1), y: (top + plotH - h).toFixed(1),
      width: bw.toFixed(1), height: Math.max(v ? 1 : 0, h).toFixed(1) },
    svg("title", {}, `${labels[i] || ""}${labels[i] ? ": " : ""}${v}`)));
    if (labels[i]) {
      // The first and last labels stay inside the chart.
      const anchor = i === 0 ? "start" : i === values.length - 1 ? "end" : "middle";
      const lx = i === 0 ? left + i * step : i === values.length - 1 ? left + (i + 1) * step : left + i * step + step / 2;
      g.append(svg("text", { class: "tick", x: lx.toFixed(1), y: height - 6, "text-anchor": anchor }, labels[i]));
    }
  });
  return g;
}

/** A tiny bar sparkline for table cells. */
function sparkline(values, label) {
  const w = 96, h = 22, max = Math.max(1, ...values);
  const step = w / values.length;
  const g = svg("svg", { class: "spark", width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img",
    "aria-label": label }, svg("title", {}, label));
  g.append(svg("line", { class: "axis", x1: 0, y1: h - 0.5, x2: w, y2: h - 0.5 }));
  values.forEach((v, i) => {
    const bh = v ? Math.max(1.5, (v / max) * (h - 2)) : 0;
    g.append(svg("rect", { class: i === values.length - 1 ? "bar now" : "bar", x: (i * step + 0.5).toFixed(1),
      y: (h - 1 - bh).toFixed(1), width: Math.max(1, step - 1).toFixed(1), height: bh.toFixed(1) }));
  });
  return g;
}

/** Labels for 24 hourly buckets, oldest first, the last being the current hour. */
function hourLabels(n = 24) {
  const now = new Date();
  return Array.from({ length: n }, (_, i) => {
    const back = n - 1 - i;
    if (back % 6 !== 0) return "";
    if (back === 0) return "now";
    const d = new Date(now.getTime() - back * 3600e3);
    return `${String(d.getHours()).padStart(2, "0")}:00`;
  });
}

/** A proportion bar: `part` of `whole`. */
function ratioBar(part, whole, label) {
  const w = 240, h = 12;
  const f = whole ? Math.min(1, Math.max(0, part / whole)) : 0;
  return svg("svg", { class: "ratio", width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": label },
    svg("title", {}, label),
    svg("rect", { class: "track", x: 0, y: 0, width: w, height: h, rx: 3 }),
    svg("rect", { class: part > whole ? "fill over" : "fill", x: 0, y: 0, width: (f * w).toFixed(1), height: h, rx: 3 }));
}

// -- shared pieces ----------------------------------------------------------

/** A scrolling table inside a panel. */
function table(headers, rows, caption, capped) {
  return el("div", { class: capped ? "scroll capped" : "scroll" }, el("table", {},
    caption ? el("caption", {}, caption) : null,
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows)));
}

const matchedText = (m) => Object.entries(m || {}).map(([b, ids]) => `${b}: ${[].concat(ids).join(", ")}`).join("; ");

/** Alerts that are not in the store (backtests): no link, matched and fields shown. */
function alertTable(alerts, caption) {
  if (!alerts || !alerts.length) return empty("No alerts.");
  return table(["At", "Rule", "Severity", "Key", "Matched", "Fields"], alerts.map((a) => el("tr", {},
    el("td", { class: "nowrap" }, when(a.at)), el("td", {}, a.rule), el("td", {}, badge(a.severity || "—", `sev-${a.severity}`)),
    el("td", {}, a.key ?? "—"), el("td", { class: "small" }, matchedText(a.matched)),
    el("td", { class: "small" }, el("code", {}, JSON.stringify(a.fields || {}))))), caption, true);
}

/** A unified diff, + and - lines coloured. */
function diffBlock(text) {
  if (!text) return empty("The texts are identical.");
  return el("pre", { class: "diff", "aria-label": "unified diff" }, text.replace(/\n$/, "").split("\n").map((l) => {
    let cls = "ln";
    if (/^(\+\+\+|---)( |$)/.test(l)) cls += " d-meta";
    else if (l.startsWith("@@")) cls += " d-hunk";
    else if (l.startsWith("+")) cls += " d-add";
    else if (l.startsWith("-")) cls += " d-del";
    return el("span", { class: cls }, l || " ");
  }));
}

/** The diff endpoint's answer: text diff plus the alert comparison. */
function diffView(body, from, to) {
  const a = body.alerts || {};
  return el("div", { class: "diff-view" },
    diffBlock(body.text),
    body.alerts ? el("p", { class: "muted" },
      `On the last ${body.sample_events ?? "?"} events: ${count(a.only_to)} alerts only with v${to}, `,
      `${count(a.only_from)} only with v${from}, ${count(a.both)} with both.`) : null);
}

let rulesCache = null;
async function loadRules() {
  const r = await api("GET", "/v1/rules");
  if (r.status === 200 && Array.isArray(r.body)) rulesCache = r.body;
  return r;
}

// -- views ------------------------------------------------------------------

function loginView(main) {
  const input = el("input", { id: "key", type: "password", autocomplete: "off", required: true, size: 40 });
  const msg = el("p", { class: "bad", role: "alert" });
  const form = el("form", { class: "panel login", "aria-labelledby": "login-h" },
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
  const head = el("div", { class: "title-row" }, el("h1", {}, "Rules"),
    can("analyst") ? el("a", { class: "button", href: "#/editor" }, "New rule") : null);
  main.append(head);
  const r = await loadRules();
  if (r.status !== 200) return main.append(failure(`Could not load the rules: ${errorText(r)}`));
  if (!r.body.length) return main.append(el("div", { class: "panel" }, empty("No rules yet. Create one in the editor.")));
  const filter = el("input", { id: "rules-filter", type: "search", size: 24, placeholder: "name, owner or status" });
  const rows = r.body.map((x) => {
    const hours = Array.isArray(x.alerts_per_hour) ? x.alerts_per_hour : null;
    const total = hours ? hours.reduce((s, n) => s + (Number(n) || 0), 0) : null;
    const tr = el("tr", { "data-rule": x.name },
      el("th", { scope: "row" }, el("a", { href: `#/editor/${enc(x.name)}` }, x.name)),
      el("td", {}, badge(x.status || "—", `status-${x.status}`)),
      el("td", {}, x.deployed_version != null ? `v${x.deployed_version}` : "—"),
      el("td", {}, x.mode ? badge(x.mode) : el("span", { class: "muted" }, "—")),
      el("td", {}, x.latest_version != null ? `v${x.latest_version}` : "—"),
      el("td", {}, x.owner ?? "—"),
      el("td", { class: "nowrap" }, when(x.updated_at)),
      el("td", { class: "spark-cell" }, hours
        ? [sparkline(hours, `${plural(total, "alert")} in the last 24 hours`), el("span", { class: "total" }, total)]
        : el("span", { class: "muted" }, "—")));
    tr.dataset.search = `${x.name} ${x.owner || ""} ${x.status || ""} ${x.mode || ""}`.toLowerCase();
    return tr;
  });
  const shown = el("span", { class: "muted", "aria-live": "polite" }, `${rows.length} rules`);
  filter.addEventListener("input", () => {
    const q = filter.value.trim().toLowerCase();
    let n = 0;
    for (const tr of rows) { tr.hidden = !!q && !tr.dataset.search.includes(q); if (!tr.hidden) n++; }
    shown.textContent = `${n} of ${rows.length} rules`;
  });
  main.append(el("div", { class: "panel" },
    el("div", { class: "row" }, el("div", {}, el("label", { for: "rules-filter" }, "Filter"), filter), shown),
    table(["Rule", "Status", "Deployed", "Mode", "Latest", "Owner", "Last change", "Alerts, last 24 h"], rows)));
}

async function editorView(main, name, focusBacktest) {
  const [vr, rr] = name
    ? await Promise.all([api("GET", `/v1/rules/${enc(name)}/versions`), loadRules()])
    : [null, null];
  if (vr && vr.status !== 200) {
    main.append(el("h1", {}, `Rule ${name}`), failure(`Could not load the versions of ${name}: ${errorText(vr)}`));
    return;
  }
  const versions = vr ? vr.body.slice().sort((a, b) => a.version - b.version) : [];
  const info = rr && rr.status === 200 ? rr.body.find((x) => x.name === name) || null : null;
  let current = versions.length ? versions[versions.length - 1] : null; // the saved version actions use
  const deployed = info && info.deployed_version != null ? info.deployed_version : null;

  main.append(el("div", { class: "title-row" }, el("h1", {}, name ? `Rule ${name}` : "New rule"),
    info ? el("p", { class: "facts" }, badge(info.status || "—", `status-${info.status}`), " ",
      deployed != null ? ["deployed ", el("strong", {}, `v${deployed}`), " ", info.mode ? badge(info.mode) : null]
        : "not deployed",
      ` · latest v${info.latest_version ?? "—"}`, info.owner ? ` · owner ${info.owner}` : "") : null));

  // The editor: a transparent textarea over a highlighted <pre>.
  const area = el("textarea", { id: "text", class: "code", spellcheck: "false", wrap: "off",
    autocapitalize: "off", autocomplete: "off", "aria-describedby": "diags", readonly: !can("analyst") });
  const layer = el("pre", { class: "hl", "aria-hidden": "true" });
  const diags = el("div", { id: "diags", class: "diags", "aria-live": "polite" });
  const dirty = el("span", { id: "dirty", class: "muted" });
  let marks = new Map();
  const paint = () => {
    layer.replaceChildren(...hlLines(area.value, marks), el("span", { class: "ln" }, " "));
    layer.scrollTop = area.scrollTop; layer.scrollLeft = area.scrollLeft;
    dirty.textContent = current && area.value !== current.text ? `unsaved changes (actions use saved v${current.version})` : "";
  };
  area.addEventListener("scroll", () => { layer.scrollTop = area.scrollTop; layer.scrollLeft = area.scrollLeft; });

  const save = el("button", { id: "save", type: "button", disabled: !can("analyst"),
    "aria-describedby": can("analyst") ? null : "save-why" }, "Save as new version");
  const showProgram = el("button", { id: "show-program", type: "button", class: "secondary",
    "aria-expanded": "false", "aria-controls": "program" }, "Show compiled program");
  const showDiff = el("button", { id: "show-diff", type: "button", class: "secondary",
    "aria-expanded": "false", "aria-controls": "diff" }, "Diff against deployed");
  const program = el("div", { id: "program", class: "out", hidden: true });
  const diff = el("div", { id: "diff", class: "out", hidden: true });

  let picker = null;
  if (versions.length > 1) {
    picker = el("select", { id: "version" }, versions.slice().reverse().map((v) =>
      el("option", { value: v.version }, `v${v.version} · ${v.created_by || "?"} · ${isoish(v.created_at).slice(0, 16).replace("T", " ")}`)));
    picker.addEventListener("change", () => {
      current = versions.find((v) => String(v.version) === picker.value);
      area.value = current.text;
      program.hidden = true; diff.hidden = true;
      showProgram.setAttribute("aria-expanded", "false"); showDiff.setAttribute("aria-expanded", "false");
      updateTarget();
      paint(); check();
    });
  }

  const targets = []; // the panels' refresh functions, called when the version changes
  const updateTarget = () => { for (const f of targets) f(); };

  main.append(el("div", { class: "editor-grid" },
    el("section", { class: "panel", "aria-labelledby": "edit-h" },
      el("div", { class: "row between" }, el("h2", { id: "edit-h" }, "Rule text"),
        picker ? el("div", { class: "inline" }, el("label", { for: "version" }, "Version"), picker) : null),
      el("label", { for: "text", class: "sr-only" }, "Rule text (.vgl)"),
      el("div", { class: "editor" }, layer, area),
      diags,
      el("div", { class: "row toolbar" }, save,
        can("analyst") ? null : el("span", { id: "save-why", class: "why" }, "needs the analyst role"),
        showProgram, showDiff, dirty),
      program, diff),
    deployPanel(name, info, () => current, targets)));

  main.append(backtestPanel(name, info, () => current, targets));
  if (current) area.value = current.text;
  else if (!name) {
    area.value = "rule my_rule {\n  severity high\n  key card_id\n  pattern a: Txn -> b: Txn[amount > a.amount * 5]\n  within 10m\n}\n";
  }
  updateTarget();
  paint();
  area.addEventListener("input", paint);

  // Diagnostics as you type: the validate endpoint, debounced.
  let timer = null, seq = 0;
  const jump = (d) => {
    const lines = area.value.split("\n");
    let pos = 0;
    for (let i = 0; i < Math.min(d.line - 1, lines.length); i++) pos += lines[i].length + 1;
    pos += Math.max(0, (d.column || 1) - 1);
    area.focus();
    area.setSelectionRange(pos, pos);
  };
  const check = async () => {
    if (!can("analyst")) {
      // Validation needs the analyst role: say so once instead of failing.
      diags.replaceChildren(el("p", { class: "muted" }, "Read-only: checking and saving rules needs the analyst role."));
      return;
    }
    const mine = ++seq;
    const r = await api("POST", "/v1/rules/validate", area.value, "text/plain");
    if (mine !== seq) return; // a newer check is under way
    diags.replaceChildren();
    const list = (r.body && r.body.diagnostics) || [];
    marks = new Map();
    for (const d of list) {
      for (let l = d.line; l <= (d.end_line || d.line); l++) {
        if (marks.get(l) !== "error") marks.set(l, d.severity === "error" ? "error" : "warning");
      }
    }
    paint();
    if (r.status === 200 && r.body.ok && !list.length) {
      diags.append(el("p", { class: "ok" }, `✓ compiles: rule ${r.body.rule}`));
    }
    const src = area.value.split("\n");
    for (const d of list) {
      const line = src[d.line - 1] ?? "";
      const width = d.end_line === d.line && d.end_column > d.column ? d.end_column - d.column : 1;
      const gutter = String(d.line).length;
      const snippet = `${d.line} | ${line}\n${" ".repeat(gutter)} | ${" ".repeat(Math.max(0, d.column - 1))}${"^".repeat(width)}${d.label ? " " + d.label : ""}`;
      diags.append(el("div", { class: `diag ${d.severity}` },
        el("p", {}, el("button", { type: "button", class: "link", title: "move the cursor there", onclick: () => jump(d) },
          `${d.line}:${d.column}`), ` ${d.severity}[${d.code}]: ${d.message}`),
        el("pre", { class: "snippet" }, snippet),
        d.hint ? el("p", { class: "hint" }, `hint: ${d.hint}`) : null));
    }
    if (r.status !== 200 && !list.length) diags.append(failure(`Could not validate: ${errorText(r)}`));
  };
  area.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(check, 300); });

  save.addEventListener("click", async () => {
    save.disabled = true;
    const r = await api("POST", "/v1/rules", area.value, "text/plain");
    save.disabled = false;
    if (r.status === 201 || r.status === 200) {
      say(`saved ${r.body.rule} version ${r.body.version}${r.body.created ? "" : " (unchanged)"}`);
      const h = `#/editor/${enc(r.body.rule)}`;
      if (location.hash === h) route(); else location.hash = h;
    } else {
      say(`not saved: ${errorText(r)}`);
      if (r.body && r.body.diagnostics) check();
    }
  });

  const programs = new Map();
  showProgram.addEventListener("click", async () => {
    const open = program.hidden;
    program.hidden = !open;
    showProgram.setAttribute("aria-expanded", String(open));
    showProgram.textContent = open ? "Hide compiled program" : "Show compiled program";
    if (!open) return;
    if (!current) return program.replaceChildren(empty("Save the rule first: the compiled program is shown for saved versions."));
    const v = current.version;
    program.replaceChildren(el("h3", {}, `Compiled program of v${v}`), el("p", { class: "muted" }, "Loading…"));
    let r = programs.get(v);
    if (!r) {
      r = await api("GET", `/v1/rules/${enc(name)}/versions/${v}/program`);
      if (r.status === 200) programs.set(v, r);
    }
    program.replaceChildren(el("h3", {}, `Compiled program of v${v}`),
      r.status === 200 ? el("pre", { class: "dump", tabindex: "0" }, r.body.dump || "(empty)")
        : failure(`Could not load the compiled program: ${errorText(r)}`));
  });

  showDiff.addEventListener("click", async () => {
    const open = diff.hidden;
    diff.hidden = !open;
    showDiff.setAttribute("aria-expanded", String(open));
    showDiff.textContent = open ? "Hide diff" : "Diff against deployed";
    if (!open) return;
    if (!current) return diff.replaceChildren(empty("Save the rule first: diffs compare saved versions."));
    if (deployed == null) return diff.replaceChildren(empty("This rule is not deployed: there is nothing to compare with."));
    if (deployed === current.version) return diff.replaceChildren(empty(`v${current.version} is the deployed version: no differences.`));
    diff.replaceChildren(el("p", { class: "muted" }, "Loading…"));
    const r = await api("GET", `/v1/rules/${enc(name)}/diff?from=${deployed}&to=${current.version}`);
    diff.replaceChildren(el("h3", {}, `Deployed v${deployed} → v${current.version}`),
      r.status === 200 ? diffView(r.body, deployed, current.version) : failure(`Could not load the diff: ${errorText(r)}`));
  });

  check();
  if (focusBacktest) { const s = $("#bt-h"); if (s) s.scrollIntoView(); }
}

/** Deploy, promote, pause, resume; deploys go through a confirmation dialog. */
function deployPanel(name, info, currentVersion, targets) {
  const deployed = info && info.deployed_version != null ? info.deployed_version : null;
  const dlgTitle = el("h2", { id: "dlg-h" });
  const dlgBody = el("div", { class: "dlg-body" });
  const confirm = el("button", { id: "confirm", type: "button" }, "Confirm");
  const dlgCancel = el("button", { id: "dlg-cancel", type: "button", class: "secondary" }, "Cancel");
  const dlg = el("dialog", { id: "deploy-dialog", "aria-labelledby": "dlg-h" }, dlgTitle, dlgBody,
    el("div", { class: "row end" }, dlgCancel, confirm));
  dlgCancel.addEventListener("click", () => dlg.close());
  let pending = null;
  confirm.addEventListener("click", async () => {
    if (!pending) return;
    confirm.disabled = true;
    const { version, mode } = pending;
    const r = await api("POST", `/v1/rules/${enc(name)}/deploy`, { version, mode });
    confirm.disabled = false;
    if (r.status >= 200 && r.status < 300) {
      dlg.close();
      say(`${name} v${version} deployed in ${mode} mode`);
      route();
    } else {
      dlgBody.append(failure(`Not deployed: ${errorText(r)}`));
    }
  });

  const open = async (mode) => {
    const cur = currentVersion();
    if (!cur) return;
    pending = { version: cur.version, mode };
    dlgTitle.textContent = mode === "active" ? `Promote ${name} v${cur.version} to active` : `Deploy ${name} v${cur.version} to shadow`;
    const lead = mode === "active"
      ? "Active alerts go to webhooks and subscribers."
      : "In shadow mode the rule runs on live events; its alerts are kept apart (mode: shadow).";
    dlgBody.replaceChildren(el("p", {}, lead));
    if (deployed == null) {
      dlgBody.append(el("p", { class: "first" }, "First deployment: this rule has no deployed version yet."),
        codeBlock(cur.text, { tabindex: "0" }));
    } else if (deployed === cur.version) {
      dlgBody.append(el("p", {}, `v${cur.version} is already deployed (${info.mode || "?"}); this sets its mode to ${mode}. The text does not change.`));
    } else {
      dlgBody.append(el("p", {}, `Changes from the deployed v${deployed} (${info.mode || "?"}) to v${cur.version}:`),
        el("p", { class: "muted" }, "Loading the diff…"));
      dlg.showModal();
      const r = await api("GET", `/v1/rules/${enc(name)}/diff?from=${deployed}&to=${cur.version}`);
      dlgBody.lastChild.remove();
      dlgBody.append(r.status === 200 ? diffView(r.body, deployed, cur.version) : failure(`Could not load the diff: ${errorText(r)}`));
      return;
    }
    dlg.showModal();
  };

  const simple = async (action, label) => {
    const r = await api("POST", `/v1/rules/${enc(name)}/${action}`);
    if (r.status >= 200 && r.status < 300) { say(`${name} ${label}`); route(); }
    else say(`${action} failed: ${errorText(r)}`);
  };

  const buttons = [
    { id: "deploy-shadow", text: "Deploy to shadow", role: "analyst", saved: true, run: () => open("shadow") },
    { id: "promote", text: "Promote to active", role: "admin", saved: true, run: () => open("active") },
    { id: "pause", text: "Pause", role: "admin", run: () => simple("pause", "paused") },
    { id: "resume", text: "Resume", role: "admin", run: () => simple("resume", "resumed") },
  ];
  const list = el("div", { class: "deploy-buttons" });
  const refresh = [];
  for (const b of buttons) {
    const why = el("span", { id: `${b.id}-why`, class: "why" });
    const btn = el("button", { id: b.id, type: "button", class: b.id === "pause" || b.id === "resume" ? "secondary" : null,
      onclick: b.run }, b.text);
    refresh.push(() => {
      const reason = needs(b.role) || (b.saved && !currentVersion() ? "save a version first" : "");
      btn.disabled = !!reason;
      why.textContent = reason;
      if (reason) btn.setAttribute("aria-describedby", why.id); else btn.removeAttribute("aria-describedby");
    });
    list.append(el("div", { class: "deploy-row" }, btn, why));
  }
  const state = el("p", { class: "muted" });
  targets.push(() => {
    const cur = currentVersion();
    state.textContent = cur ? `Deploy and promote act on v${cur.version}.` : "Save a version first.";
    for (const f of refresh) f();
  });
  return el("section", { class: "panel deploy", "aria-labelledby": "deploy-h" },
    el("h2", { id: "deploy-h" }, "Deployment"),
    el("p", {}, deployed != null ? ["Deployed: ", el("strong", {}, `v${deployed}`), " ", info.mode ? badge(info.mode) : null,
      info.status === "paused" ? [" ", badge("paused", "status-paused")] : null] : "Not deployed."),
    state, list, dlg);
}

/** Test and backtest: events pasted or a stored sample, optional labels. */
function backtestPanel(name, info, currentVersion, targets) {
  const events = el("textarea", { id: "bt-events", class: "code small", spellcheck: "false", wrap: "off",
    placeholder: '{"id": "e1", "type": "Txn", "ts": "2026-01-05T10:00:00Z", ...}' });
  const sample = el("select", { id: "bt-sample" }, el("option", { value: "" }, "— none: use the pasted events —"));
  const sampleNote = el("p", { class: "muted small", id: "bt-sample-note" });
  const file = el("input", { id: "bt-file", type: "file", accept: ".jsonl,.ndjson,.json,application/x-ndjson,text/plain",
    disabled: !can("analyst"), "aria-describedby": can("analyst") ? null : "bt-file-why" });
  const labels = el("textarea", { id: "bt-labels", class: "code small", spellcheck: "false", wrap: "off",
    placeholder: '{"key": "c1", "label": true}' });
  const run = el("button", { id: "run-backtest", type: "button", disabled: !can("analyst"),
    "aria-describedby": can("analyst") ? "bt-target" : "run-backtest-why bt-target" }, "Run backtest");
  const cancel = el("button", { id: "cancel-backtest", type: "button", class: "secondary", hidden: true }, "Cancel");
  const progress = el("progress", { id: "bt-progress", max: 1, value: 0 });
  const stateText = el("span", { id: "bt-state" });
  const progressRow = el("div", { class: "row", hidden: true, id: "bt-progress-row" },
    el("label", { for: "bt-progress", class: "inline-label" }, "Progress"), progress, stateText, cancel);
  const results = el("div", { id: "bt-results", "aria-live": "polite" });
  const targetText = el("p", { class: "muted", id: "bt-target" });
  targets.push(() => {
    const cur = currentVersion();
    const deployed = info && info.deployed_version;
    if (!cur) targetText.textContent = "Save the rule first: backtests run a saved version.";
    else {
      targetText.textContent = `Runs v${cur.version}` + (deployed != null && deployed !== cur.version
        ? `, compared with the deployed v${deployed}.` : deployed === cur.version ? " (the deployed version)." : ".");
    }
    run.disabled = !can("analyst") || !cur;
  });

  const loadSamples = async (select) => {
    const r = await api("GET", "/v1/samples");
    if (r.status !== 200 || !Array.isArray(r.body)) {
      sampleNote.textContent = `Stored samples are not available: ${errorText(r)}`;
      return;
    }
    sample.replaceChildren(sample.firstChild, ...r.body.map((s) =>
      el("option", { value: s.name }, `${s.name} (${s.lines ?? "?"} lines, ${Math.ceil((s.bytes || 0) / 1024)} KiB)`)));
    sampleNote.textContent = r.body.length ? "" : "No stored samples yet: upload one below.";
    if (select) sample.value = select;
  };
  file.addEventListener("change", async () => {
    const f = file.files && file.files[0];
    if (!f) return;
    // The sample's name: the file name without its extension, made safe.
    const sname = f.name.replace(/\.(jsonl|ndjson|json|txt)$/i, "").replace(/[^A-Za-z0-9._-]+/g, "_")
      .replace(/^\.+/, "").slice(0, 64) || "sample";
    sampleNote.textContent = `Uploading ${sname}…`;
    const r = await api("PUT", `/v1/samples/${enc(sname)}`, await f.text(), "application/x-ndjson");
    if (r.status === 201 || r.status === 200) {
      await loadSamples(r.body?.name || sname);
      sampleNote.textContent = `Uploaded ${r.body?.name || sname}: ${r.body?.lines ?? "?"} lines.`;
    } else {
      sampleNote.textContent = `Upload failed: ${errorText(r)}`;
    }
    file.value = "";
  });

  let job = null; // {id, timer}
  const stop = () => { if (job) clearTimeout(job.timer); job = null; cancel.hidden = true; run.disabled = !can("analyst") || !currentVersion(); };
  window.addEventListener("hashchange", stop, { once: true });
  const poll = async (id) => {
    if (!job || job.id !== id || !run.isConnected) return;
    const r = await api("GET", `/v1/backtests/${enc(id)}`);
    if (!job || job.id !== id) return;
    if (r.status !== 200) {
      stop();
      stateText.textContent = "";
      results.replaceChildren(failure(`Lost the backtest: ${errorText(r)}`));
      return;
    }
    const b = r.body;
    if (b.events_total) { progress.max = b.events_total; progress.value = b.events_done || 0; }
    else progress.removeAttribute("value");
    stateText.textContent = `${b.state}: ${b.events_done ?? 0} of ${b.events_total ?? "?"} events`;
    if (b.state === "running") { job.timer = setTimeout(() => poll(id), 300); return; }
    stop();
    if (b.state === "done" && b.report) { progress.max = 1; progress.value = 1; results.replaceChildren(report(b)); }
    else if (b.state === "cancelled") results.replaceChildren(el("p", { class: "warn" }, `Backtest cancelled after ${b.events_done ?? 0} events.`));
    else results.replaceChildren(failure(`Backtest ${b.state}: ${b.error || "no report"}`));
  };
  run.addEventListener("click", async () => {
    const cur = currentVersion();
    if (!cur) return;
    const body = { rule: name, version: cur.version };
    if (sample.value) body.sample = sample.value;
    else if (events.value.trim()) body.events = events.value;
    else {
      results.replaceChildren(failure("Paste events (NDJSON) or choose a stored sample first."));
      return events.focus();
    }
    if (labels.value.trim()) body.labels = labels.value;
    const deployed = info && info.deployed_version;
    if (deployed != null && deployed !== cur.version) body.against = deployed;
    run.disabled = true;
    results.replaceChildren();
    const r = await api("POST", "/v1/backtests", body);
    if (![200, 201, 202].includes(r.status) || !r.body || !r.body.id) {
      run.disabled = false;
      results.replaceChildren(failure(`Backtest not started: ${errorText(r)}`));
      return;
    }
    job = { id: r.body.id, timer: null };
    progress.max = 1; progress.removeAttribute("value");
    stateText.textContent = "starting…";
    progressRow.hidden = false; cancel.hidden = false;
    poll(r.body.id);
  });
  cancel.addEventListener("click", async () => {
    if (!job) return;
    const r = await api("DELETE", `/v1/backtests/${enc(job.id)}`);
    if (r.status >= 300) say(`cancel failed: ${errorText(r)}`);
  });
  loadSamples();

  return el("section", { class: "panel", "aria-labelledby": "bt-h", id: "backtest" },
    el("h2", { id: "bt-h" }, "Test and backtest"), targetText,
    el("div", { class: "bt-grid" },
      el("div", {}, el("label", { for: "bt-events" }, "Events (NDJSON, one JSON event per line)"), events),
      el("div", {},
        el("label", { for: "bt-sample" }, "…or a stored sample"), sample, sampleNote,
        el("label", { for: "bt-file" }, "Upload a JSONL sample"), file,
        can("analyst") ? null : el("span", { id: "bt-file-why", class: "why" }, "needs the analyst role"),
        el("label", { for: "bt-labels" }, "Labels (optional NDJSON: {\"event\": id, \"label\": true} or {\"key\": k, \"label\": true})"), labels)),
    el("div", { class: "row toolbar" }, run,
      can("analyst") ? null : el("span", { id: "run-backtest-why", class: "why" }, "needs the analyst role")),
    progressRow, results);
}

/** The report of a finished backtest. */
function report(b) {
  const rep = b.report;
  const out = el("div", { class: "report" });
  out.append(el("div", { class: "stats" },
    el("div", { class: "stat" }, el("span", { id: "bt-alerts", class: "num" }, rep.alerts ?? 0), el("span", {}, "alerts")),
    el("div", { class: "stat" }, el("span", { class: "num" }, rep.events ?? 0), el("span", {}, "events")),
    el("div", { class: "stat" }, el("span", { class: rep.rejected ? "num bad" : "num" }, rep.rejected ?? 0), el("span", {}, "rejected")),
    rep.score ? [
      el("div", { class: "stat" }, el("span", { class: "num", id: "bt-precision" }, pct(rep.score.precision)), el("span", {}, "precision")),
      el("div", { class: "stat" }, el("span", { class: "num", id: "bt-recall" }, pct(rep.score.recall)), el("span", {}, "recall")),
      el("div", { class: "stat" }, el("span", { class: "num", id: "bt-f1" }, rep.score.f1 == null ? "—" : Number(rep.score.f1).toFixed(3)), el("span", {}, "F1")),
    ] : null));
  if (rep.score) {
    out.append(el("p", { class: "muted" }, `${rep.score.true_positives ?? "?"} true positives of ${rep.score.positives ?? "?"} labelled positives.`));
  }
  const per = Object.entries(rep.per_rule || {});
  if (per.length) {
    out.append(el("h3", {}, "Alerts per rule"), el("ul", { class: "per-rule", id: "bt-per-rule" },
      per.map(([r, n]) => el("li", {}, el("strong", {}, r), `: ${n}`))));
  }
  const ot = rep.over_time || [];
  out.append(el("h3", {}, "Alerts over time (UTC)"));
  if (ot.length) {
    const times = ot.map((x) => new Date(x.at));
    const span = times.length > 1 ? times[times.length - 1] - times[0] : 0;
    const fmt = (d) => {
      if (isNaN(d)) return "?";
      const iso = d.toISOString();
      if (span > 86400e3 || (rep.bucket_ms || 0) >= 86400e3) return `${iso.slice(5, 10)} ${iso.slice(11, 16)}`;
      return (rep.bucket_ms || 60000) < 60000 ? iso.slice(11, 19) : iso.slice(11, 16);
    };
    const every = Math.max(1, Math.ceil(ot.length / 6));
    const labels = times.map((d, i) => (i % every === 0 ? fmt(d) : ""));
    const total = ot.reduce((s, x) => s + (x.count || 0), 0);
    out.append(el("div", { class: "chart-wrap" }, barChart(ot.map((x) => x.count || 0), labels,
      { height: 190, label: `${plural(total, "alert")} over time, ${fmtDur(rep.bucket_ms)} buckets, from ${fmt(times[0])} to ${fmt(times[times.length - 1])}` })),
    el("p", { class: "muted small" }, `Buckets of ${fmtDur(rep.bucket_ms)}.`));
  } else out.append(empty("No alerts to chart."));

  if (rep.diff) {
    const d = rep.diff;
    out.append(el("h3", {}, `Compared with v${d.against ?? b.against}`),
      el("div", { class: "stats", id: "bt-diff" },
        el("div", { class: "stat" }, el("span", { class: "num d-add-num", id: "bt-only-new" }, d.only_new ?? 0), el("span", {}, `only v${b.version} (new)`)),
        el("div", { class: "stat" }, el("span", { class: "num d-del-num", id: "bt-only-old" }, d.only_old ?? 0), el("span", {}, `only v${d.against ?? b.against} (old)`)),
        el("div", { class: "stat" }, el("span", { class: "num", id: "bt-both" }, d.both ?? 0), el("span", {}, "both"))),
      el("details", { open: (d.only_new_alerts || []).length ? true : null }, el("summary", {}, `Alerts only with v${b.version} (${d.only_new ?? 0})`),
        alertTable(d.only_new_alerts)),
      el("details", { open: (d.only_old_alerts || []).length ? true : null }, el("summary", {}, `Alerts only with v${d.against ?? b.against} (${d.only_old ?? 0})`),
        alertTable(d.only_old_alerts)));
  }
  const samples = rep.sample_alerts || [];
  out.append(el("h3", {}, "Sample alerts"));
  out.append(samples.length ? alertTable(samples.slice(0, 50),
    samples.length > 50 || (rep.alerts || 0) > samples.length ? `first 50 of ${rep.alerts ?? samples.length} alerts` : null)
    : empty("The backtest raised no alerts."));
  return out;
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
  const body = el("tbody", { id: "alerts-body" });
  const live = el("span", { class: "muted", id: "live", "aria-live": "polite" });
  const form = el("form", { class: "panel row", "aria-label": "Alert filters" },
    el("div", {}, el("label", { for: "f-rule" }, "Rule"), f.rule),
    el("div", {}, el("label", { for: "f-sev" }, "Severity"), f.severity),
    el("div", {}, el("label", { for: "f-key" }, "Key"), f.key),
    el("div", {}, el("label", { for: "f-mode" }, "Mode"), f.mode), go, live);
  const chart = el("section", { class: "panel", "aria-labelledby": "aph-h" });
  main.append(form, chart, el("div", { class: "panel" }, el("div", { class: "scroll capped" }, el("table", {},
    el("thead", {}, el("tr", {}, ["At", "Rule", "Severity", "Key", "Mode", "Id"].map((h) => el("th", { scope: "col" }, h)))),
    body))));

  const drawChart = () => {
    const rule = f.rule.value.trim();
    const rules = (rulesCache || []).filter((x) => Array.isArray(x.alerts_per_hour) && (!rule || x.name === rule));
    const h = el("h2", { id: "aph-h" }, `Alerts per hour, last 24 h${rule ? ` — ${rule}` : ", all rules"}`);
    if (!rulesCache) return chart.replaceChildren(h, empty(rulesLoaded ? "The per-hour counts are not available." : "Loading…"));
    if (!rules.length) {
      return chart.replaceChildren(h, empty(rule ? `No hourly counts for a rule named ${rule}.` : "The per-hour counts are not available."));
    }
    const sums = Array(24).fill(0);
    for (const x of rules) {
      const a = x.alerts_per_hour.slice(-24);
      a.forEach((n, i) => (sums[24 - a.length + i] += Number(n) || 0));
    }
    const total = sums.reduce((s, n) => s + n, 0);
    chart.replaceChildren(h, el("div", { class: "chart-wrap" },
      barChart(sums, hourLabels(24), { height: 150, label: `${plural(total, "alert")} in the last 24 hours${rule ? ` for ${rule}` : ""}` })));
  };
  let rulesLoaded = false;
  loadRules().then(() => { rulesLoaded = true; drawChart(); });

  const emptyRow = () => el("tr", { class: "empty-row" }, el("td", { colspan: 6 }, "No alerts yet. New ones appear here as they are raised."));
  const row = (a) => el("tr", {}, el("td", { class: "nowrap" }, when(a.at)),
    el("td", {}, el("a", { href: `#/editor/${enc(a.rule)}` }, a.rule)),
    el("td", {}, badge(a.severity || "—", `sev-${a.severity}`)),
    el("td", {}, a.key ?? "—"), el("td", {}, badge(a.mode || "active")),
    el("td", {}, el("a", { href: `#/alert/${enc(a.id)}`, class: "mono" }, a.id)));
  let abort = null;
  let chartTimer = null;
  const watch = async () => {
    if (abort) abort.abort();
    const mine = abort = new AbortController();
    body.replaceChildren();
    drawChart();
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(f)) if (v.value.trim()) q.set(k, v.value.trim());
    // The newest stored first, then the live stream (server-sent events read
    // with fetch: EventSource cannot send the key in a header).
    const past = await api("GET", `/v1/alerts?${q}&limit=50`);
    if (mine.signal.aborted) return;
    if (past.status === 200) for (const a of past.body.alerts.map((s) => s.alert || s)) body.append(row(a));
    else body.append(el("tr", {}, el("td", { colspan: 6, class: "bad" }, `Could not load alerts: ${errorText(past)}`)));
    if (!body.children.length) body.append(emptyRow());
    try {
      const r = await fetch(`/v1/alerts/stream?${q}`, {
        headers: { Authorization: "Bearer " + sessionStorage.getItem(KEY) }, signal: mine.signal });
      if (!r.ok) { live.textContent = `live stream unavailable (HTTP ${r.status})`; return; }
      live.textContent = "● live";
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value: chunkBytes, done } = await reader.read();
        if (done) break;
        buf += dec.decode(chunkBytes, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const chunk = buf.slice(0, i); buf = buf.slice(i + 2);
          const data = chunk.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
          if (!chunk.includes("event: alert") || !data) continue;
          try {
            const a = JSON.parse(data);
            const e = body.querySelector(".empty-row");
            if (e) e.remove();
            body.prepend(row(a));
            while (body.children.length > 500) body.lastChild.remove();
            // The hourly chart follows the stream (one reload per second at most).
            clearTimeout(chartTimer);
            chartTimer = setTimeout(() => loadRules().then(drawChart), 1000);
          } catch { /* a partial event */ }
        }
      }
      live.textContent = "stream ended";
    } catch (e) {
      if (e.name !== "AbortError") { live.textContent = ""; say(`stream stopped: ${e.message}`); }
    }
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); watch(); });
  window.addEventListener("hashchange", () => abort && abort.abort(), { once: true });
  watch();
}

/** One alert, explained: the span against the window, each binding's events. */
async function alertView(main, id) {
  main.append(el("h1", {}, "Alert"));
  if (!id) return main.append(failure("No alert id in the address."));
  let x = null, note = null;
  const r = await api("GET", `/v1/alerts/${enc(id)}/explain`);
  if (r.status === 200 && r.body && r.body.alert) x = r.body;
  else {
    const b = await api("GET", `/v1/alerts/${enc(id)}`);
    if (b.status !== 200) return main.append(failure(`Could not load alert ${id}: ${errorText(b)}`));
    note = `The full explanation is not available (${errorText(r)}); showing the matched events only.`;
    const a = b.body.alert || {};
    const bindings = Object.entries(b.body.events || {}).map(([bn, evs]) => ({
      name: bn, predicate: undefined, fields: [],
      events: (evs || []).map((e) => { const { id: eid, type, ts, ...rest } = e; return { id: eid, type, ts, fields: rest }; }),
    }));
    const ts = bindings.flatMap((bd) => bd.events.map((e) => Date.parse(e.ts))).filter((t) => !isNaN(t));
    const vs = await api("GET", `/v1/rules/${enc(a.rule)}/versions`);
    const text = vs.status === 200 && Array.isArray(vs.body) ? (vs.body.find((v) => v.version === a.version) || {}).text : null;
    x = { alert: a, rule: a.rule, version: a.version, within_ms: null, emitted: a.fields, text, bindings,
      span_ms: ts.length ? Math.max(...ts) - Math.min(...ts) : null,
      first_at: ts.length ? new Date(Math.min(...ts)).toISOString() : null,
      last_at: ts.length ? new Date(Math.max(...ts)).toISOString() : null };
  }
  const a = x.alert;
  const rule = x.rule || a.rule, version = x.version ?? a.version;
  main.firstChild.textContent = `Alert from ${rule}`;
  if (note) main.append(el("p", { class: "warn" }, note));
  const dt = (k, v) => [el("dt", {}, k), el("dd", {}, v)];
  main.append(el("section", { class: "panel", "aria-label": "Summary" },
    el("dl", { class: "meta" },
      dt("Rule", el("a", { href: `#/editor/${enc(rule)}` }, rule)),
      dt("Version", `v${version}`),
      dt("Severity", badge(a.severity || "—", `sev-${a.severity}`)),
      dt("Key", a.key ?? "— (global rule)"),
      dt("At", when(a.at)),
      dt("Mode", badge(a.mode || "active")),
      dt("Detected", when(a.detected_at)),
      dt("Id", el("code", {}, a.id))),
    el("p", { class: "span-line", id: "time-span" }, el("strong", {}, "Time span: "),
      x.within_ms != null
        ? [`${fmtDur(x.span_ms)} of the ${fmtDur(x.within_ms)} window `,
          ratioBar(x.span_ms || 0, x.within_ms, `${Math.round(100 * (x.span_ms || 0) / (x.within_ms || 1))}% of the window`)]
        : `${fmtDur(x.span_ms)} between the first and the last matched event`,
      x.first_at ? el("span", { class: "muted" }, " (", when(x.first_at), " → ", when(x.last_at), ")") : null)));

  const bindings = x.bindings || [];
  if (!bindings.length) main.append(el("div", { class: "panel" }, empty("This alert lists no matched events.")));
  for (const bd of bindings) {
    const used = bd.fields || [];
    const evs = bd.events || [];
    const others = [];
    for (const e of evs) {
      for (const k of Object.keys(e.fields || {})) {
        if (!used.includes(k) && !others.includes(k) && !["id", "type", "ts"].includes(k)) others.push(k);
      }
    }
    const hid = `b-${bd.name}`.replace(/[^A-Za-z0-9_-]/g, "_");
    main.append(el("section", { class: "panel binding", "aria-labelledby": hid },
      el("h2", { id: hid }, "Binding ", el("code", {}, bd.name), el("span", { class: "muted" }, ` · ${plural(evs.length, "event")}`)),
      el("p", {}, "Predicate: ", bd.predicate
        ? el("code", { class: "pred" }, hlTokens(bd.predicate, bindingNames(x.text || "")))
        : el("span", { class: "muted" }, bd.predicate === undefined ? "not available" : "none (every event of the type)")),
      evs.length ? table(["id", "type", "ts", ...used.map((u) => el("span", { class: "used" }, u)), ...others],
        evs.map((e) => el("tr", {}, el("td", { class: "mono" }, e.id ?? "—"), el("td", {}, e.type ?? "—"),
          el("td", { class: "nowrap" }, when(e.ts)),
          used.map((u) => el("td", { class: "used" }, value((e.fields || {})[u]))),
          others.map((o) => el("td", {}, value((e.fields || {})[o]))))))
        : empty("No events bound (an optional step that did not match).")));
  }

  const emitted = Object.entries(x.emitted || a.fields || {});
  main.append(el("section", { class: "panel", "aria-labelledby": "emit-h" }, el("h2", { id: "emit-h" }, "Emitted fields"),
    emitted.length ? el("dl", { class: "meta", id: "emitted" }, emitted.map(([k, v]) => dt(k, value(v))))
      : empty("This rule emits no fields.")));
  if (x.text) {
    main.append(el("details", { class: "panel", id: "rule-source" }, el("summary", {}, `Rule source (v${version})`), codeBlock(x.text)));
  }
}

async function auditView(main) {
  main.append(el("h1", {}, "Audit log"));
  const r = await api("GET", "/v1/audit?limit=1000");
  if (r.status !== 200) return main.append(failure(`Could not load the audit log: ${errorText(r)}`));
  if (!r.body.length) return main.append(el("div", { class: "panel" }, empty("The audit log is empty.")));
  const rows = r.body.slice().reverse().map((e) => {
    const tr = el("tr", {},
      el("td", {}, e.seq), el("td", { class: "nowrap" }, when(e.at)), el("td", {}, e.actor), el("td", {}, e.action), el("td", {}, e.target));
    tr.dataset.search = `${e.actor} ${e.action} ${e.target}`.toLowerCase();
    return tr;
  });
  const filter = el("input", { id: "audit-filter", type: "search", size: 24, placeholder: "who, action or target" });
  const shown = el("span", { class: "muted", "aria-live": "polite" }, `${rows.length} entries`);
  const none = el("p", { class: "empty", hidden: true }, "No entry matches the filter.");
  filter.addEventListener("input", () => {
    const q = filter.value.trim().toLowerCase();
    let n = 0;
    for (const tr of rows) { tr.hidden = !!q && !tr.dataset.search.includes(q); if (!tr.hidden) n++; }
    shown.textContent = `${n} of ${rows.length} entries`;
    none.hidden = n > 0;
  });
  main.append(el("div", { class: "panel" },
    el("div", { class: "row" }, el("div", {}, el("label", { for: "audit-filter" }, "Filter"), filter), shown),
    table(["#", "At", "Who", "Action", "Target"], rows), none));
}

// -- routing ----------------------------------------------------------------

async function route() {
  const main = $("#main");
  // Each route renders into its own container: a slow view that finishes
  // after the user moved on writes into a detached node, not the page.
  const view = el("div", { class: "view" });
  main.replaceChildren(view);
  const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const arg = rest.join("/");
  if (!sessionStorage.getItem(KEY) || name === "login") {
    me = null;
    $("#nav").hidden = true; $("#logout").hidden = true; $("#who").textContent = "";
    return loginView(view);
  }
  if (!me) {
    const r = await api("GET", "/v1/me");
    if (r.status !== 200) { location.hash = "#/login"; return; }
    me = r.body;
  }
  $("#nav").hidden = false; $("#logout").hidden = false;
  $("#who").textContent = `${me.name} (${me.role})`;
  const views = {
    rules: rulesView, editor: editorView, alerts: alertsView, alert: alertView, audit: auditView,
    backtest: (m, a) => editorView(m, a, true),
  };
  const key = views[name] ? name : "rules";
  const navKey = { alert: "alerts", backtest: "editor" }[key] || key;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === `#/${navKey}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  let decoded = arg;
  try { decoded = arg && decodeURIComponent(arg); } catch { /* keep it raw */ }
  try {
    await views[key](view, decoded || undefined);
  } catch (e) {
    view.append(failure(`This page failed: ${e.message}`));
    throw e;
  }
  if (view.isConnected && !view.contains(document.activeElement)) main.focus({ preventScroll: true });
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
