// Live monitoring on the chat page (docs/monitoring.md): a small block kept apart from app.js.
// It adds a "Monitor" field to the steering controls, puts `monitor: [names]` into the page's
// /v1/chat/completions requests, and draws each name's per-token reading (z-score) as one line
// under the answer being streamed, updated with every chunk. It touches app.js at no point: it
// wraps window.fetch for that one route and reads a copy of the response stream.
(function () {
  "use strict";
  const COLORS = ["#d9480f", "#1971c2", "#2f9e44", "#9c36b5", "#e67700", "#0c8599", "#c2255c", "#5c940d"];

  function addControl() {
    const safety = document.getElementById("safety");
    const anchor = safety ? safety.closest(".field") : null;
    const field = document.createElement("div");
    field.className = "field";
    field.id = "monitor-field";
    field.innerHTML = '<label for="monitor-names">Monitor (per-token readings)</label>' +
      '<input type="text" id="monitor-names" placeholder="pirate, trait:formal, assistant_axis">';
    if (anchor && anchor.parentNode) anchor.parentNode.insertBefore(field, anchor.nextSibling);
    else document.body.appendChild(field);
  }

  function names() {
    const input = document.getElementById("monitor-names");
    return input ? input.value.split(",").map((s) => s.trim()).filter(Boolean) : [];
  }

  function currentBubble() {   // app.js adds the answer's bubble before it calls fetch
    const bubbles = document.querySelectorAll(".assistant.streaming");
    return bubbles[bubbles.length - 1] || null;
  }

  function chartFor(bubble) {
    if (!bubble) return null;
    let box = bubble.querySelector(".monitor-chart");
    if (!box) {
      box = document.createElement("div");
      box.className = "monitor-chart";
      box.style.cssText = "margin-top:6px;font-size:12px";
      bubble.appendChild(box);
    }
    return box;
  }

  function draw(box, series) {
    const w = 320, h = 48;
    box.innerHTML = "";
    Object.entries(series).forEach(([name, s], i) => {
      const vals = s.tokens;
      const lo = Math.min(-1, ...vals), hi = Math.max(1, ...vals);
      const pts = vals.map((v, j) => `${(vals.length > 1 ? j / (vals.length - 1) : 0) * w},${h - ((v - lo) / (hi - lo)) * h}`).join(" ");
      const zero = h - ((0 - lo) / (hi - lo)) * h;
      const row = document.createElement("div");
      row.className = "monitor-row";
      row.dataset.name = name;
      row.dataset.count = String(vals.length);
      row.innerHTML = `<svg width="${w}" height="${h}" style="vertical-align:middle;background:#f8f9fa">` +
        `<line x1="0" x2="${w}" y1="${zero}" y2="${zero}" stroke="#adb5bd" stroke-dasharray="3"/>` +
        `<polyline fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="1.5" points="${pts}"/></svg> `;
      const label = document.createElement("span");
      const f = (x) => (x == null ? "-" : (x >= 0 ? "+" : "") + x.toFixed(2));
      label.textContent = `${name}: last ${f(s.last)} · mean ${f(s.mean)} · [${f(s.min)}, ${f(s.max)}]`;
      row.appendChild(label);
      box.appendChild(row);
    });
  }

  async function follow(resp, bubble) {
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    const series = {};
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      let idx;
      while ((idx = buf.search(/\r?\n\r?\n/)) >= 0) {
        const block = buf.slice(0, idx);
        buf = buf.slice(idx + (buf[idx] === "\r" ? 4 : 2));
        const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
        if (!data || data === "[DONE]") continue;
        let ev;
        try { ev = JSON.parse(data); } catch (e) { continue; }
        for (const ch of ev.choices || []) {
          if (!ch.monitor) continue;
          for (const [name, r] of Object.entries(ch.monitor)) {
            const s = series[name] || (series[name] = { tokens: [] });
            s.tokens.push(...r.tokens);
            Object.assign(s, { mean: r.mean, last: r.last, min: r.min, max: r.max });
          }
          const box = chartFor(bubble);
          if (box) draw(box, series);
        }
      }
    }
  }

  const original = window.fetch.bind(window);
  window.fetch = async function (url, opts) {
    const wanted = names();
    if (url !== "/v1/chat/completions" || !wanted.length || !opts || typeof opts.body !== "string") {
      return original(url, opts);
    }
    const body = JSON.parse(opts.body);
    body.monitor = wanted;
    const resp = await original(url, Object.assign({}, opts, { body: JSON.stringify(body) }));
    if (!resp.ok || !resp.body) return resp;
    const [mine, theirs] = resp.body.tee();
    follow(new Response(mine), currentBubble()).catch(() => {});
    return new Response(theirs, { status: resp.status, statusText: resp.statusText, headers: resp.headers });
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", addControl);
  else addControl();
})();
