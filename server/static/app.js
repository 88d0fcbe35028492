// persona-steer web page: plain JS, no build step, no external resources.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  model: null,            // base model id for /v1/chat/completions
  personas: [],           // [{name, description, loaded, ...}]
  traits: [],
  blend: {},              // persona -> weight (blend sliders)
  traitWeights: {},       // trait -> weight
  messages: [],           // conversation sent to the server
  controller: null,       // AbortController of the running generation
  apiKey: localStorage.getItem("personaSteerApiKey") || "",
};

// ---------------------------------------------------------------- HTTP helpers
class ApiError extends Error {
  constructor(status, message, param) {
    super(message);
    this.status = status;
    this.param = param;
  }
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (state.apiKey) h["Authorization"] = "Bearer " + state.apiKey;
  return h;
}

async function errorFrom(resp) {
  let message = resp.statusText || "request failed";
  let param = null;
  try {
    const body = await resp.json();
    if (body && body.error) {
      message = typeof body.error === "string" ? body.error : (body.error.message || message);
      param = body.error.param || null;
    } else if (body && body.detail) {
      message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    }
  } catch (e) { /* not JSON */ }
  if (resp.status === 401) askForKey();
  return new ApiError(resp.status, message, param);
}

async function api(method, path, body) {
  const opts = { method, headers: headers(body !== undefined ? { "Content-Type": "application/json" } : {}) };
  if (body !== undefined) opts.body = JSON.stringify(body);
  let resp;
  try {
    resp = await fetch(path, opts);
  } catch (e) {
    throw new ApiError(0, "the server cannot be reached (" + e.message + ")");
  }
  if (!resp.ok) throw await errorFrom(resp);
  const text = await resp.text();
  return text ? JSON.parse(text) : {};
}

function showError(err) {
  const msg = err instanceof ApiError && err.status
    ? `Server error ${err.status}: ${err.message}` + (err.param ? ` (${err.param})` : "")
    : String(err && err.message ? err.message : err);
  $("error-text").textContent = msg;
  $("error").hidden = false;
}
function clearError() { $("error").hidden = true; $("error-text").textContent = ""; }

function askForKey() {
  const dlg = $("key-dialog");
  if (dlg.open) return;
  $("api-key").value = state.apiKey;
  dlg.showModal();
}

function listFrom(data, key) {
  if (Array.isArray(data)) return data;
  if (data && Array.isArray(data[key])) return data[key];
  if (data && Array.isArray(data.data)) return data.data;
  return [];
}
const nameOf = (e) => (typeof e === "string" ? e : e.name);
const fmt = (x) => (Math.round(x * 100) / 100).toString();
// OpenAI request field -> its input under the message box
const PENALTY_FIELDS = { presence_penalty: "presence-penalty", frequency_penalty: "frequency-penalty" };
// inputs that /api/status fills until the user edits them: [status section, field, input id].
// client_defaults: what the bundled clients send (config `clients`); sampling_defaults: the
// model's own generation config (Qwen3: temperature 0.6), as `vllm serve` would use it
const STATUS_FILLED = [
  ...Object.entries(PENALTY_FIELDS).map(([field, id]) => ["client_defaults", field, id]),
  ["sampling_defaults", "temperature", "temperature"],
];

// ---------------------------------------------------------------- markdown (safe subset)
function escapeHtml(s) {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

function inlineMd(text) {
  // text is raw; everything is escaped first, then a few patterns become tags.
  const codes = [];
  let s = text.replace(/`([^`\n]+)`/g, (m, c) => { codes.push(c); return "\u0000" + (codes.length - 1) + "\u0000"; });
  s = escapeHtml(s);
  s = s.replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>");
  s = s.replace(/(^|[^*\w])\*([^*\n]+)\*(?!\w)/g, "$1<em>$2</em>");
  s = s.replace(/(^|[^_\w])_([^_\n]+)_(?!\w)/g, "$1<em>$2</em>");
  s = s.replace(/\[([^\]\n]+)\]\((https?:\/\/[^\s)"]+)\)/g,
    '<a href="$2" rel="noopener noreferrer" target="_blank">$1</a>');
  s = s.replace(/\u0000(\d+)\u0000/g, (m, i) => "<code>" + escapeHtml(codes[Number(i)]) + "</code>");
  return s;
}

function renderMarkdown(src) {
  const lines = src.replace(/\r\n?/g, "\n").split("\n");
  const out = [];
  let para = [], list = null, i = 0;
  const flushPara = () => { if (para.length) { out.push("<p>" + para.map(inlineMd).join("<br>") + "</p>"); para = []; } };
  const flushList = () => { if (list) { out.push(`<${list.tag}>` + list.items.map((it) => "<li>" + inlineMd(it) + "</li>").join("") + `</${list.tag}>`); list = null; } };
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^\s*```\s*([\w+-]*)\s*$/);
    if (fence) {
      flushPara(); flushList();
      const code = [];
      i++;
      while (i < lines.length && !/^\s*```\s*$/.test(lines[i])) code.push(lines[i++]);
      i++; // closing fence (or end of a still-streaming block)
      out.push("<pre><code>" + escapeHtml(code.join("\n")) + "</code></pre>");
      continue;
    }
    const h = line.match(/^(#{1,6})\s+(.*)$/);
    const ul = line.match(/^\s*[-*+]\s+(.*)$/);
    const ol = line.match(/^\s*\d+[.)]\s+(.*)$/);
    if (h) {
      flushPara(); flushList();
      const level = Math.min(6, h[1].length + 2);
      out.push(`<h${level}>` + inlineMd(h[2]) + `</h${level}>`);
    } else if (ul || ol) {
      flushPara();
      const tag = ul ? "ul" : "ol";
      if (!list || list.tag !== tag) { flushList(); list = { tag, items: [] }; }
      list.items.push((ul || ol)[1]);
    } else if (/^\s*>\s?/.test(line)) {
      flushPara(); flushList();
      out.push("<blockquote>" + inlineMd(line.replace(/^\s*>\s?/, "")) + "</blockquote>");
    } else if (line.trim() === "") {
      flushPara(); flushList();
    } else {
      flushList();
      para.push(line);
    }
    i++;
  }
  flushPara(); flushList();
  return out.join("");
}

// ---------------------------------------------------------------- steering state
function currentSteering() {
  const body = {};
  const persona = $("persona").value;
  if (persona) {
    body.persona = persona;
    body.strength = Number($("strength").value);
  }
  const blend = {};
  for (const [n, w] of Object.entries(state.blend)) if (w !== 0 && n !== persona) blend[n] = w;
  if (Object.keys(blend).length) body.blend = blend;
  const traits = {};
  for (const [n, w] of Object.entries(state.traitWeights)) if (w !== 0) traits[n] = w;
  if (Object.keys(traits).length) body.traits = traits;
  if ($("safety").checked) body.safety = true;
  if ($("steer-tokens").value) body.steer_tokens = $("steer-tokens").value;
  return body;
}

function describeSteering(s) {
  const parts = [];
  if (s.persona) parts.push(`${s.persona} ×${fmt(s.strength)}`);
  for (const [n, w] of Object.entries(s.blend || {})) parts.push(`${n} ${fmt(w)}`);
  for (const [n, w] of Object.entries(s.traits || {})) parts.push(`${n} ${w > 0 ? "+" : ""}${fmt(w)}`);
  if (s.safety) parts.push("safety on");
  if (s.steer_tokens && parts.length) parts.push(`steering ${s.steer_tokens}`);
  return parts.length ? parts.join(" · ") : "none";
}

// A persona's recommended defaults (the server's `recommended`, e.g. the toy model's demo
// personas): choosing the persona moves the strength slider and the temperature to them,
// except a control the user has set by hand, whose value wins.
const RECOMMENDED_INPUTS = { strength: "strength", temperature: "temperature" };
function recommendedFor(id) {
  const entry = state.personas.find((p) => p.name === $("persona").value);
  const field = Object.keys(RECOMMENDED_INPUTS).find((f) => RECOMMENDED_INPUTS[f] === id);
  return !!(field && entry && entry.recommended && typeof entry.recommended[field] === "number");
}
function applyRecommended() {
  const name = $("persona").value;
  const entry = state.personas.find((p) => p.name === name);
  const rec = (entry && entry.recommended) || null;
  const note = $("persona-recommended");
  note.hidden = !rec;
  const parts = [];
  for (const [field, id] of Object.entries(RECOMMENDED_INPUTS)) {
    const value = rec && typeof rec[field] === "number" ? rec[field] : null;
    if (value !== null) parts.push(`${field} ${fmt(value)}`);
    // untouched: the recommendation, or back to the page's (or the model's) own default
    if (!$(id).dataset.touched) $(id).value = String(value ?? $(id).dataset.statusValue ?? $(id).defaultValue);
  }
  if (!rec) { note.textContent = ""; updateCurrent(); return; }
  note.textContent = `recommended for ${name}: ${parts.join(", ")}`;
  updateCurrent();
}

function updateCurrent() {
  $("current-steering").textContent = describeSteering(currentSteering()) +
    ` (global scale ${$("status-scale").textContent})`;
  $("strength-value").textContent = fmt(Number($("strength").value));
}

function sliderRow(container, kind, name, min, max, value, onChange) {
  const row = document.createElement("div");
  row.className = "row";
  const id = `${kind}-${name}`;
  const label = document.createElement("label");
  label.htmlFor = id;
  label.textContent = name;
  const input = document.createElement("input");
  Object.assign(input, { type: "range", id, min, max, step: "0.05", value: String(value) });
  input.dataset.name = name;
  input.setAttribute("aria-valuetext", String(value));
  const out = document.createElement("output");
  out.htmlFor = id;
  out.textContent = fmt(value);
  input.addEventListener("input", () => {
    const v = Number(input.value);
    out.textContent = fmt(v);
    input.setAttribute("aria-valuetext", fmt(v));
    onChange(v);
    updateCurrent();
  });
  row.append(label, input, out);
  container.append(row);
}

function renderSteeringControls() {
  const sel = $("persona");
  const chosen = sel.value;
  sel.replaceChildren(new Option("(none)", ""));
  for (const p of state.personas) sel.append(new Option(p.name, p.name));
  sel.value = state.personas.some((p) => p.name === chosen) ? chosen : "";

  const blend = $("blend-sliders");
  blend.replaceChildren();
  for (const k of Object.keys(state.blend)) if (!state.personas.some((p) => p.name === k)) delete state.blend[k];
  if (!state.personas.length) blend.innerHTML = '<p class="muted">no personas</p>';
  for (const p of state.personas) {
    sliderRow(blend, "blend", p.name, 0, 1, state.blend[p.name] || 0, (v) => { state.blend[p.name] = v; });
  }

  const traits = $("trait-sliders");
  traits.replaceChildren();
  for (const k of Object.keys(state.traitWeights)) if (!state.traits.some((t) => t.name === k)) delete state.traitWeights[k];
  if (!state.traits.length) traits.innerHTML = '<p class="muted">no traits</p>';
  for (const t of state.traits) {
    sliderRow(traits, "trait", t.name, -1, 1, state.traitWeights[t.name] || 0, (v) => { state.traitWeights[t.name] = v; });
  }
  applyRecommended();
}

function renderVectorList() {
  const ul = $("vector-list");
  ul.replaceChildren();
  const all = state.personas.map((v) => ["persona", v]).concat(state.traits.map((v) => ["trait", v]));
  if (!all.length) {
    const li = document.createElement("li");
    li.textContent = "no personas or traits yet";
    ul.append(li);
  }
  for (const [kind, v] of all) {
    const li = document.createElement("li");
    li.dataset.kind = kind;
    li.dataset.name = v.name;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = v.name;
    if (v.description) name.title = v.description;
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = kind;
    const loaded = document.createElement("span");
    loaded.className = "badge" + (v.loaded ? " loaded" : "");
    loaded.textContent = v.loaded ? "loaded" : "on disk";
    const info = document.createElement("button");
    info.type = "button"; info.className = "small secondary"; info.textContent = "Info";
    info.setAttribute("aria-label", `Info about ${kind} ${v.name}`);
    info.addEventListener("click", () => showInfo(kind, v.name));
    const toggle = document.createElement("button");
    toggle.type = "button"; toggle.className = "small secondary";
    toggle.textContent = v.loaded ? "Unload" : "Load";
    toggle.setAttribute("aria-label", `${v.loaded ? "Unload" : "Load"} ${kind} ${v.name}`);
    toggle.addEventListener("click", () => setLoaded(kind, v.name, !v.loaded));
    const tune = document.createElement("button");
    tune.type = "button"; tune.className = "small secondary"; tune.textContent = "Tune";
    tune.setAttribute("aria-label", `Tune ${kind} ${v.name}`);
    tune.addEventListener("click", () => tuneVector(kind, v.name));
    const del = document.createElement("button");
    del.type = "button"; del.className = "small danger"; del.textContent = "Delete";
    del.setAttribute("aria-label", `Delete ${kind} ${v.name}`);
    del.addEventListener("click", () => deleteVector(kind, v.name));
    li.append(name, badge, loaded);
    const rec = v.recommended && typeof v.recommended.strength === "number" ? v.recommended.strength : null;
    if (rec !== null) {
      const strength = document.createElement("span");
      strength.className = "badge recommended";
      strength.textContent = `strength ${fmt(rec)}`;
      strength.title = "recommended strength (persona-steer tune; used when a request gives none)";
      li.append(strength);
    }
    li.append(toggle, info, tune, del);
    ul.append(li);
  }
}

// onlyIfChanged (the background poll): re-render only when the store changed, e.g. another
// client added a persona, and not while the user is on a steering control (a re-render would
// replace the slider under the pointer; the next poll catches up).
async function refreshVectors(onlyIfChanged = false) {
  const [p, t] = await Promise.all([api("GET", "/api/personas"), api("GET", "/api/traits")]);
  const personas = listFrom(p, "personas").map((e) => (typeof e === "string" ? { name: e } : e));
  const traits = listFrom(t, "traits").map((e) => (typeof e === "string" ? { name: e } : e));
  const signature = JSON.stringify([personas, traits]);
  if (onlyIfChanged && (signature === state.vectorsSignature || editingSteering())) return;
  state.vectorsSignature = signature;
  state.personas = personas;
  state.traits = traits;
  renderSteeringControls();
  renderVectorList();
  renderEqualizePicker();
}

function editingSteering() {
  const a = document.activeElement;
  return !!(a && a.closest && a.closest("#persona, #blend-sliders, #trait-sliders, #equalize-pick"));
}

// Every POLL_MS while the page is visible and no reply is streaming, and when it becomes
// visible again: the status bar, and the vector lists when the store changed.
const POLL_MS = 15000;
function poll() {
  if (document.hidden || state.controller) return;
  refreshStatus().catch(() => {});
  refreshVectors(true).catch(() => {});
}

function renderEqualizePicker() {
  const box = $("equalize-pick");
  const ticked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
  box.querySelectorAll("label, p").forEach((e) => e.remove());
  if (!state.personas.length) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = "no personas yet";
    box.append(p);
  }
  for (const v of state.personas) {
    const label = document.createElement("label");
    const tick = document.createElement("input");
    tick.type = "checkbox";
    tick.value = v.name;
    tick.checked = ticked.has(v.name);
    label.append(tick, " " + v.name);
    box.append(label);
  }
}

function loadedText(st) {
  const loaded = st.loaded ?? st.loaded_vectors;
  if (!loaded) return "none";
  if (Array.isArray(loaded)) return loaded.map((x) => (typeof x === "string" ? x : `${x.kind}/${x.name}`)).join(", ") || "none";
  const parts = [];
  for (const [kind, names] of Object.entries(loaded)) {
    const list = Array.isArray(names) ? names.map(nameOf) : [String(names)];
    if (list.length) parts.push(`${kind}: ${list.join(", ")}`);
  }
  return parts.join("; ") || "none";
}

async function refreshStatus() {
  const st = await api("GET", "/api/status");
  let model = st.model;
  if (model && typeof model === "object") model = model.name || model.id || JSON.stringify(model);
  let engine = st.engine_state ?? st.engine;
  if (engine && typeof engine === "object") engine = engine.state || JSON.stringify(engine);
  $("status-model").textContent = model ?? "?";
  $("status-engine").textContent = engine ?? "?";
  if (st.steering_scale !== undefined) {
    $("status-scale").textContent = fmt(st.steering_scale);
    if (document.activeElement !== $("scale")) {
      $("scale").value = String(st.steering_scale);
      $("scale-value").textContent = fmt(st.steering_scale);
    }
  }
  $("status-loaded").textContent = loadedText(st);
  if (typeof st.num_layers === "number" && st.num_layers > 0) {
    const layer = $("sim-layer");
    layer.max = String(st.num_layers - 1);
    if (!layer.dataset.touched) layer.value = String(Math.floor(st.num_layers / 2));
  }
  for (const [section, field, id] of STATUS_FILLED) {
    const value = (st[section] || {})[field];
    if (typeof value !== "number") continue;
    $(id).dataset.statusValue = String(value);
    if (!$(id).dataset.touched && !recommendedFor(id)) $(id).value = String(value);
  }
  // the strength slider starts at the server's default (steering.default_strength)
  if (typeof st.default_strength === "number") {
    $("strength").dataset.statusValue = String(st.default_strength);
    if (!$("strength").dataset.touched && !recommendedFor("strength")) $("strength").value = String(st.default_strength);
  }
  updateCurrent();
}

async function refreshModel() {
  const data = await api("GET", "/v1/models");
  const ids = listFrom(data, "data").map((m) => m.id);
  state.model = ids.find((i) => !i.startsWith("persona:") && !i.startsWith("persona/")) || ids[0] || null;
}

async function refreshAll() {
  try {
    await Promise.all([refreshStatus(), refreshVectors(), refreshModel()]);
  } catch (e) { showError(e); }
}

// ---------------------------------------------------------------- chat
function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  if (role === "user") div.textContent = text;
  else if (role === "error-msg") { div.textContent = text; div.setAttribute("role", "alert"); }
  $("log").append(div);
  scrollLog();
  return div;
}

// Keep the newest text in view by scrolling the conversation only (never the whole page,
// which would move the controls under the user's pointer while a reply streams).
function scrollLog() {
  const log = $("log");
  log.scrollTop = log.scrollHeight;
}

function assistantBubble() {
  const div = addMessage("assistant streaming", "");
  const details = document.createElement("details");
  details.className = "thinking";
  details.hidden = true;
  const summary = document.createElement("summary");
  summary.textContent = "Thinking";
  const thought = document.createElement("div");
  thought.className = "thinking-text";
  details.append(summary, thought);
  const answer = document.createElement("div");
  answer.className = "answer";
  const meta = document.createElement("div");
  meta.className = "meta";
  div.append(details, answer, meta);
  return { div, details, thought, answer, meta };
}

// Read an OpenAI-style SSE stream, calling onEvent(obj) for each `data:` JSON object.
async function readSSE(resp, onEvent) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let idx;
    while ((idx = buf.search(/\r?\n\r?\n/)) >= 0) {
      const block = buf.slice(0, idx);
      buf = buf.slice(idx + (buf[idx] === "\r" ? 4 : 2));
      const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      let obj;
      try { obj = JSON.parse(data); } catch (e) { continue; }
      onEvent(obj);
    }
  }
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

async function sendMessage(text) {
  clearError();
  if (!state.model) {
    try { await refreshModel(); } catch (e) { showError(e); return; }
  }
  const steering = currentSteering();
  state.messages.push({ role: "user", content: text });
  addMessage("user", text);
  const bubble = assistantBubble();
  const body = Object.assign({
    model: state.model,
    messages: state.messages,
    stream: true,
    max_tokens: Number($("max-tokens").value) || 256,
    temperature: Number($("temperature").value),
  }, steering);
  for (const [field, id] of Object.entries(PENALTY_FIELDS)) {
    const value = Number($(id).value);
    if (value) body[field] = value;   // 0 (or empty): the API's default, sent as nothing
  }
  if ($("thinking").checked) body.chat_template_kwargs = { enable_thinking: true };
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  let answer = "", thinking = "", applied = null, finish = null;
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(body), signal: controller.signal,
    });
    if (!resp.ok) throw await errorFrom(resp);
    await readSSE(resp, (ev) => {
      if (ev.error) {
        const e = typeof ev.error === "string" ? { message: ev.error } : ev.error;
        throw new ApiError(e.code && Number(e.code) ? Number(e.code) : 500, e.message || "stream error", e.param);
      }
      if (ev.steering) applied = ev.steering;
      bubble.div.dataset.chunks = String(Number(bubble.div.dataset.chunks || 0) + 1);
      for (const ch of ev.choices || []) {
        const d = ch.delta || {};
        const r = d.reasoning_content || d.reasoning || "";
        if (r) {
          thinking += r;
          bubble.details.hidden = false;
          bubble.thought.textContent = thinking;
        }
        if (d.content) {
          answer += d.content;
          bubble.answer.innerHTML = renderMarkdown(answer);
          scrollLog();
        }
        if (ch.finish_reason) finish = ch.finish_reason;
      }
    });
    state.messages.push({ role: "assistant", content: answer });
    bubble.meta.textContent = "steering: " + (applied ? describeApplied(applied) : describeSteering(steering)) +
      (finish ? ` · ${finish}` : "");
  } catch (e) {
    if (e.name === "AbortError") {
      bubble.meta.textContent = "stopped";
      if (answer) state.messages.push({ role: "assistant", content: answer });
      else state.messages.pop();
    } else {
      state.messages.pop();
      if (!answer) bubble.div.remove();
      const msg = e instanceof ApiError && e.status ? `Server error ${e.status}: ${e.message}` : `Error: ${e.message}`;
      addMessage("error-msg", msg);
      showError(e);
    }
  } finally {
    bubble.div.classList.remove("streaming");
    state.controller = null;
    setBusy(false);
  }
}

function describeApplied(a) {
  if (typeof a !== "object") return String(a);
  const parts = [];
  for (const [n, w] of Object.entries(a.personas || {})) parts.push(`${n} ${fmt(w)}`);
  for (const [n, w] of Object.entries(a.traits || {})) parts.push(`${n} ${w > 0 ? "+" : ""}${fmt(w)}`);
  if (a.scale !== undefined && a.scale !== null) parts.push(`scale ${fmt(a.scale)}`);
  if (a.safety) parts.push("safety on");
  if (a.steer_tokens && a.steer_tokens !== "all") {   // echoed only when steering is partial
    parts.push(typeof a.steer_start === "number"
      ? `steering from token ${a.steer_start}` : `steering ${a.steer_tokens}`);
  }
  return parts.join(" · ") || "none";
}

// ---------------------------------------------------------------- vectors: delete / info / jobs
function confirmDialog(text) {
  return new Promise((resolve) => {
    const dlg = $("confirm-dialog");
    $("confirm-text").textContent = text;
    dlg.returnValue = "";
    dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), { once: true });
    dlg.showModal();
    $("confirm-cancel").focus();
  });
}

async function setLoaded(kind, name, load) {
  try {
    await api("POST", `/api/${kind}s/${encodeURIComponent(name)}/${load ? "load" : "unload"}`);
    clearError();
    await refreshStatus();
    await refreshVectors();   // the list's button changes last, after the status bar
  } catch (e) { showError(e); }
}

async function deleteVector(kind, name) {
  if (!(await confirmDialog(`Delete ${kind} "${name}"? This cannot be undone.`))) return;
  try {
    await api("DELETE", `/api/${kind}s/${encodeURIComponent(name)}`);
    clearError();
    await refreshVectors();
    await refreshStatus();
  } catch (e) { showError(e); }
}

function svgEl(tag, attrs, text) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function barChart(labels, values, title) {
  const w = 560, h = 200, pad = 34;
  const svg = svgEl("svg", { viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": title });
  svg.append(svgEl("title", {}, title));
  const max = Math.max(...values.map((v) => Math.abs(v)), 1e-9);
  const hasNeg = values.some((v) => v < 0);
  const zeroY = hasNeg ? (h - pad) / 2 + 6 : h - pad;
  const scale = hasNeg ? (h - pad - 12) / 2 / max : (h - pad - 12) / max;
  const bw = (w - pad - 8) / values.length;
  svg.append(svgEl("line", { x1: pad, x2: w, y1: zeroY, y2: zeroY, stroke: "#888" }));
  svg.append(svgEl("text", { x: pad - 4, y: zeroY - max * scale + 4, "font-size": 11, "text-anchor": "end", fill: "#555" }, fmt(max)));
  svg.append(svgEl("text", { x: pad - 4, y: zeroY + 4, "font-size": 11, "text-anchor": "end", fill: "#555" }, "0"));
  values.forEach((v, i) => {
    const x = pad + i * bw + 2, bh = Math.abs(v) * scale;
    const rect = svgEl("rect", { x, y: v >= 0 ? zeroY - bh : zeroY, width: Math.max(bw - 4, 1), height: bh, fill: v >= 0 ? "#2454c5" : "#b3261e" });
    rect.append(svgEl("title", {}, `layer ${labels[i]}: ${v}`));
    svg.append(rect);
    if (values.length <= 48 || i % Math.ceil(values.length / 24) === 0) {
      svg.append(svgEl("text", { x: x + bw / 2 - 2, y: h - pad + 14, "font-size": 10, "text-anchor": "middle", fill: "#555" }, labels[i]));
    }
  });
  svg.append(svgEl("text", { x: w / 2, y: h - 4, "font-size": 11, "text-anchor": "middle", fill: "#555" }, "layer"));
  return svg;
}

// Find a per-layer number series in a vector's metadata (prefer keys about separation).
function perLayerSeries(info) {
  const meta = info.metadata || {};
  const layers = info.layers || [];
  const keys = Object.keys(meta).sort((a, b) => (b.includes("separation") ? 1 : 0) - (a.includes("separation") ? 1 : 0));
  for (const key of keys) {
    let v = meta[key];
    if (typeof v === "string") { try { v = JSON.parse(v); } catch (e) { continue; } }
    if (Array.isArray(v) && v.length && v.length === layers.length && v.every((x) => typeof x === "number")) {
      return { key, labels: layers.map(String), values: v };
    }
    if (v && typeof v === "object" && !Array.isArray(v)) {
      const ks = Object.keys(v).filter((k) => /^\d+$/.test(k));
      if (ks.length >= 1 && ks.length === Object.keys(v).length && ks.every((k) => typeof v[k] === "number")) {
        ks.sort((a, b) => Number(a) - Number(b));
        return { key, labels: ks, values: ks.map((k) => v[k]) };
      }
    }
  }
  if (Array.isArray(info.norms) && info.norms.length === layers.length) {
    return { key: "vector norm", labels: layers.map(String), values: info.norms };
  }
  return null;
}

async function showInfo(kind, name) {
  let info;
  try { info = await api("GET", `/api/${kind}s/${encodeURIComponent(name)}`); } catch (e) { showError(e); return; }
  $("info-title").textContent = `${kind}: ${name}`;
  const body = $("info-body");
  body.replaceChildren();
  const table = document.createElement("table");
  const rows = [];
  for (const k of ["description", "model", "hidden_size", "layers", "content_hash", "loaded"]) {
    if (info[k] !== undefined) rows.push([k, info[k]]);
  }
  for (const [k, v] of Object.entries(info.metadata || {})) {
    if (!rows.some((r) => r[0] === k)) rows.push([k, v]);
  }
  for (const [k, v] of rows) {
    const tr = document.createElement("tr");
    const th = document.createElement("th"); th.textContent = k;
    const td = document.createElement("td");
    let s = typeof v === "string" ? v : JSON.stringify(v);
    if (s.length > 400) s = s.slice(0, 400) + "…";
    td.textContent = s;
    tr.append(th, td);
    table.append(tr);
  }
  const series = perLayerSeries(info);
  if (series) {
    const h = document.createElement("h3");
    h.textContent = `Per-layer ${series.key}`;
    const chart = document.createElement("div");
    chart.className = "chart info-chart";
    chart.append(barChart(series.labels, series.values, `${series.key} per layer for ${name}`));
    body.append(h, chart);
  }
  body.append(table);
  $("info-dialog").showModal();
}

async function equalizePersonas(ev) {
  ev.preventDefault();
  const names = [...$("equalize-pick").querySelectorAll("input:checked")].map((i) => i.value);
  const out = $("equalize-result");
  out.textContent = "";
  let data;
  try { data = await api("POST", "/api/vectors/equalize", { names, kind: "persona" }); }
  catch (e) { showError(e); return; }
  clearError();
  out.textContent = "factors per layer: " + data.names.map(n =>
    `${n} ${Object.values(data.factors[n]).map(f => Number(f).toFixed(2)).join("/")}`).join(", ");
  await refreshVectors();
}

function heatColor(v) {
  const t = Math.max(-1, Math.min(1, v));
  const r = t > 0 ? 255 : Math.round(255 * (1 + t));
  const b = t < 0 ? 255 : Math.round(255 * (1 - t));
  const g = Math.round(255 * (1 - Math.abs(t)));
  return `rgb(${r},${g},${b})`;
}

async function showSimilarity() {
  const layer = $("sim-layer").value;
  const box = $("heatmap");
  let data;
  try { data = await api("GET", `/api/vectors/similarity?layer=${encodeURIComponent(layer)}`); } catch (e) { showError(e); box.textContent = e.message; return; }
  const names = data.names || data.personas || data.labels || [];
  const m = data.matrix || data.similarity || data.cosine || [];
  box.replaceChildren();
  if (!names.length) { box.textContent = "no personas to compare at this layer"; return; }
  const cell = Math.max(18, Math.min(48, Math.floor(300 / names.length)));
  const left = 90, top = 90;
  const w = left + cell * names.length + 4, h = top + cell * names.length + 4;
  const svg = svgEl("svg", { viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": `Cosine similarity between personas at layer ${data.layer ?? layer}` });
  svg.append(svgEl("title", {}, `cosine similarity at layer ${data.layer ?? layer}`));
  names.forEach((n, i) => {
    svg.append(svgEl("text", { x: left - 4, y: top + i * cell + cell / 2 + 4, "font-size": 11, "text-anchor": "end" }, n));
    svg.append(svgEl("text", { x: left + i * cell + cell / 2, y: top - 6, "font-size": 11, transform: `rotate(-45 ${left + i * cell + cell / 2} ${top - 6})` }, n));
    names.forEach((n2, j) => {
      const v = Number((m[i] || [])[j]);
      const rect = svgEl("rect", { x: left + j * cell, y: top + i * cell, width: cell - 1, height: cell - 1, fill: heatColor(isFinite(v) ? v : 0), class: "heat-cell" });
      rect.append(svgEl("title", {}, `${n} · ${n2}: ${isFinite(v) ? v.toFixed(3) : "n/a"}`));
      svg.append(rect);
      if (cell >= 30) svg.append(svgEl("text", { x: left + j * cell + cell / 2, y: top + i * cell + cell / 2 + 4, "font-size": 10, "text-anchor": "middle" }, isFinite(v) ? v.toFixed(2) : ""));
    });
  });
  box.append(svg);
  const legend = document.createElement("p");
  legend.className = "muted";
  legend.textContent = "blue = opposite (−1), white = unrelated (0), red = same direction (+1)";
  box.append(legend);
}

function jobItem(title) {
  const li = document.createElement("li");
  const label = document.createElement("span");
  label.textContent = title;
  const prog = document.createElement("progress");
  prog.max = 1;
  prog.setAttribute("aria-label", title);
  const msg = document.createElement("div");
  msg.className = "job-status";
  msg.textContent = "queued";
  li.append(label, prog, msg);
  $("jobs").prepend(li);
  return { li, prog, msg };
}

const FINISHED = ["done", "succeeded", "success", "completed", "failed", "error", "cancelled"];
const FAILED = ["failed", "error", "cancelled"];

function showJob(item, job) {
  const pr = job.progress;
  let note = job.message || job.stage || "";
  if (typeof pr === "number") item.prog.value = pr > 1 ? pr / 100 : pr;
  else if (pr && typeof pr === "object") {   // {"stage", "done", "total", "message"}
    if (typeof pr.done === "number" && typeof pr.total === "number" && pr.total > 0) item.prog.value = Math.min(1, pr.done / pr.total);
    note = [pr.stage, pr.total ? `${pr.done}/${pr.total}` : "", pr.message].filter(Boolean).join(" · ") || note;
  }
  const status = job.status || job.state || "running";
  const err = job.error && typeof job.error === "object" ? job.error.message : job.error;
  item.msg.textContent = status + (note ? ` · ${note}` : "") + (err ? ` · ${err}` : "");
  item.li.dataset.status = status;
  item.msg.classList.toggle("failed", FAILED.includes(status));
  if (status === "done" || status === "succeeded" || status === "completed" || status === "success") item.prog.value = 1;
}

// Follows a job's progress events in the Jobs list until it ends; resolves to {item, job}
// (its list entry and its final record), after the page has refreshed.
async function followJob(job, title) {
  job = job.job || job;
  const item = jobItem(title);
  const id = job.id || job.job_id;
  showJob(item, job);
  let last = job;
  try {
    const resp = await fetch(`/api/jobs/${encodeURIComponent(id)}/events`, { headers: headers() });
    if (!resp.ok) throw await errorFrom(resp);
    await readSSE(resp, (ev) => {
      last = Object.assign({}, last, ev.job || ev);
      showJob(item, last);
    });
  } catch (e) {
    // the stream broke: fall back to polling the job
    for (let i = 0; i < 600 && !FINISHED.includes(last.status); i++) {
      await new Promise((r) => setTimeout(r, 1000));
      try { last = await api("GET", `/api/jobs/${encodeURIComponent(id)}`); showJob(item, last); } catch (e2) { showError(e2); break; }
    }
  }
  if (!FINISHED.includes(last.status)) {
    try { last = await api("GET", `/api/jobs/${encodeURIComponent(id)}`); showJob(item, last); } catch (e) { /* shown above */ }
  }
  if (last.status === "cancelled") {
    showError(new Error(`${title} was cancelled`));
  } else if (FAILED.includes(last.status)) {
    const err = last.error && typeof last.error === "object" ? last.error.message : last.error;
    showError(new Error(`${title} failed: ${err || last.message || "unknown error"}`));
  }
  await refreshAll();
  return { item, job: last };
}

// ---------------------------------------------------------------- tune (persona-steer tune as a job)
// The Tune options as the API's TuneRequest; an empty field is left out (server config tune.*).
function tuneOptions() {
  const body = {};
  const raw = $("tune-strengths").value.trim();
  if (raw) {
    const strengths = raw.split(/[\s,]+/).filter(Boolean).map(Number);
    if (!strengths.every((x) => Number.isFinite(x) && x > 0)) {
      throw new Error(`tune strengths must be positive numbers, got "${raw}"`);
    }
    body.strengths = strengths;
  }
  if ($("tune-questions").value !== "") body.num_questions = Number($("tune-questions").value);
  if ($("tune-min-coherence").value !== "") body.min_coherence = Number($("tune-min-coherence").value);
  return body;
}

// "1-3" for a run of three or more layers, else "1,2" (as `persona-steer tune` prints them)
function layerLabel(layers) {
  if (!layers || !layers.length) return "none";
  const run = layers.every((l, i) => l === layers[0] + i);
  return run && layers.length > 2 ? `${layers[0]}-${layers[layers.length - 1]}` : layers.join(",");
}

function showTuneResult(item, tune) {
  const out = document.createElement("div");
  out.className = "job-result";
  const best = tune.best;
  if (!best) {
    out.textContent = `no setting kept coherence >= ${fmt(tune.min_coherence)}: nothing stored`;
  } else {
    out.dataset.layers = JSON.stringify(best.layers);
    out.dataset.strength = String(best.strength);
    out.textContent = `picked layers ${layerLabel(best.layers)}, strength ${fmt(best.strength)} ` +
      `(expression ${fmt(best.expression)}, coherence ${fmt(best.coherence)}; ` +
      (tune.written ? "stored with the vector)" : "not stored)");
  }
  item.li.append(out);
}

async function tuneVector(kind, name) {
  let job;
  try {
    job = await api("POST", `/api/${kind}s/${encodeURIComponent(name)}/tune`, tuneOptions());
  } catch (e) { showError(e); return; }
  clearError();
  const { item, job: last } = await followJob(job, `tune ${kind} ${name}`);
  if (last.status !== "succeeded") return;
  let tune = last.result && last.result.tune;
  if (!tune) {
    try { tune = (await api("GET", `/api/jobs/${encodeURIComponent(last.id)}`)).result.tune; }
    catch (e) { showError(e); return; }
  }
  showTuneResult(item, tune);
}

// Which persona is stronger, from the tuned strengths (POST /api/vectors/equalize by "tuned")
async function compareTuned() {
  const names = [...$("equalize-pick").querySelectorAll("input:checked")].map((i) => i.value);
  const body = { kind: "persona", by: "tuned" };
  if (names.length >= 2) body.names = names;
  const table = $("tuned-table");
  let data;
  try { data = await api("POST", "/api/vectors/equalize", body); }
  catch (e) { table.hidden = true; showError(e); return; }
  clearError();
  const rows = data.strengths.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.name = r.name;
    for (const text of [r.name, r.tuned ? fmt(r.recommended_strength) : "untuned",
      r.tuned ? r.relative_strength.toFixed(2) : "–"]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  });
  table.tBodies[0].replaceChildren(...rows);
  table.caption.textContent = `Personas by tuned strength (relative: ${fmt(data.common_strength)} ` +
    "over its own; above 1 pushes harder per unit of strength)";
  table.hidden = false;
}

async function createPersona(ev) {
  ev.preventDefault();
  const name = $("persona-name").value.trim();
  const description = $("persona-description").value.trim();
  try {
    const job = await api("POST", "/api/personas", { name, description });
    clearError();
    $("persona-form").reset();
    followJob(job, `persona ${name}`);
  } catch (e) { showError(e); }
}

async function createTrait(ev) {
  ev.preventDefault();
  const word = $("trait-word").value.trim();
  const opposite = $("trait-opposite").value.trim();
  const name = $("trait-name").value.trim();
  const body = { word, opposite };
  if (name) body.name = name;
  try {
    const job = await api("POST", "/api/traits", body);
    clearError();
    $("trait-form").reset();
    followJob(job, `trait ${name || word}`);
  } catch (e) { showError(e); }
}

// ---------------------------------------------------------------- wiring
function init() {
  $("chat-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = $("message").value.trim();
    if (!text || state.controller) return;
    $("message").value = "";
    sendMessage(text);
  });
  $("message").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $("chat-form").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => { if (state.controller) state.controller.abort(); });
  document.addEventListener("keydown", (ev) => {   // Escape stops a reply (unless a dialog is open)
    if (ev.key === "Escape" && state.controller && !document.querySelector("dialog[open]")) {
      ev.preventDefault();
      state.controller.abort();
    }
  });
  $("reset").addEventListener("click", () => {
    if (state.controller) state.controller.abort();
    state.messages = [];
    $("log").replaceChildren();
    clearError();
    $("message").focus();
  });
  $("persona").addEventListener("change", applyRecommended);
  $("strength").addEventListener("input", () => { $("strength").dataset.touched = "1"; updateCurrent(); });
  $("safety").addEventListener("change", updateCurrent);
  $("steer-tokens").addEventListener("change", updateCurrent);
  $("scale").addEventListener("input", () => { $("scale-value").textContent = fmt(Number($("scale").value)); });
  $("scale-apply").addEventListener("click", async () => {
    try {
      await api("POST", "/api/steering-scale", { scale: Number($("scale").value) });
      clearError();
      await refreshStatus();
    } catch (e) { showError(e); }
  });
  $("steer-clear").addEventListener("click", () => {
    $("persona").value = "";
    $("strength").value = $("strength").dataset.statusValue || "1";
    delete $("strength").dataset.touched;
    $("safety").checked = false;
    $("steer-tokens").value = "";
    state.blend = {};
    state.traitWeights = {};
    renderSteeringControls();
  });
  $("status-refresh").addEventListener("click", refreshAll);
  $("error-close").addEventListener("click", clearError);
  $("api-key-button").addEventListener("click", askForKey);
  $("key-dialog").addEventListener("close", () => {
    if ($("key-dialog").returnValue === "ok") {
      state.apiKey = $("api-key").value.trim();
      if (state.apiKey) localStorage.setItem("personaSteerApiKey", state.apiKey);
      else localStorage.removeItem("personaSteerApiKey");
      clearError();
      refreshAll();
    }
  });
  $("persona-form").addEventListener("submit", createPersona);
  $("trait-form").addEventListener("submit", createTrait);
  $("sim-show").addEventListener("click", showSimilarity);
  $("equalize-form").addEventListener("submit", equalizePersonas);
  $("tuned-compare").addEventListener("click", compareTuned);
  $("sim-layer").addEventListener("input", () => { $("sim-layer").dataset.touched = "1"; });
  for (const [, , id] of STATUS_FILLED) {
    $(id).addEventListener("input", () => { $(id).dataset.touched = "1"; });
  }
  refreshAll();
  setInterval(poll, POLL_MS);
  document.addEventListener("visibilitychange", poll);
}

document.addEventListener("DOMContentLoaded", init);
