// The UI's only script (no framework, no build): live regions over server-sent events,
// confirmed POST buttons, the trigger form, and a big run's page drawn a screenful at a
// time. Pages work without it, minus liveness, actions and that economy.
"use strict";

function flash(text, error) {
  const f = document.getElementById("flash");
  if (!f) return;
  f.textContent = text;
  f.className = error ? "error" : "ok";
}

// Every POST carries the CSRF header the server requires.
async function post(url, body) {
  const r = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Orchestrator-CSRF": "1" },
    body: JSON.stringify(body || {}),
    credentials: "same-origin",
  });
  let answer = {};
  try { answer = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) throw new Error(answer.error || ("HTTP " + r.status));
  return answer;
}

// A live region: when the server says its data changed, fetch the page's content part
// and swap it in, keeping open <details> open.
function live(region) {
  const url = region.dataset.events;
  if (!url || !window.EventSource) return;
  let busy = false, again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const sep = location.search ? "&" : "?";
      // Keep as many task sections as the reader has loaded.
      const loaded = region.querySelectorAll("#tasks section.task").length;
      const r = await fetch(location.pathname + location.search + sep + "partial=1" + (loaded ? "&tasks=" + loaded : ""), { credentials: "same-origin" });
      if (r.ok) {
        const open = new Set([...region.querySelectorAll("details[open]")].map(d => d.closest("[data-task]")?.dataset.task + "/" + d.querySelector("summary")?.textContent));
        region.innerHTML = await r.text();
        for (const d of region.querySelectorAll("details")) {
          if (open.has(d.closest("[data-task]")?.dataset.task + "/" + d.querySelector("summary")?.textContent)) d.open = true;
        }
        enhance(region);
        document.body.dataset.updated = String(Date.now());
      }
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }
  function open() {
    const source = new EventSource(url);
    source.addEventListener("change", refresh);
    // Reconnects on its own; the first event after a reconnect is "hello": refresh then
    // too.
    let connected = false;
    source.addEventListener("hello", () => {
      if (connected) refresh();
      connected = true;
      document.body.dataset.live = "connected";
    });
    return source;
  }
  let source = open();
  // A browser allows six connections per host over HTTP/1.1, and a page left behind (a
  // reload, a link followed) kept its stream's open for a minute: the seventh page
  // waited for one. Close it when the page goes; reopen it (and refresh) if the page
  // comes back from the back/forward cache.
  window.addEventListener("pagehide", () => source.close());
  window.addEventListener("pageshow", (e) => {
    if (e.persisted && source.readyState === EventSource.CLOSED) {
      source = open();
      refresh();
    }
  });
}

document.addEventListener("click", async (e) => {
  const b = e.target.closest("button[data-post]");
  if (!b) return;
  e.preventDefault();
  if (b.dataset.confirm && !window.confirm(b.dataset.confirm)) return;
  b.disabled = true;
  try {
    const answer = await post(b.dataset.post, b.dataset.body ? JSON.parse(b.dataset.body) : {});
    flash(answer.run_id ? "Started: run " + answer.run_id : "Done.", false);
  } catch (err) {
    flash(err.message, true);
  } finally {
    b.disabled = false;
  }
});

document.addEventListener("submit", async (e) => {
  const form = e.target.closest("form.trigger");
  if (!form) return;
  e.preventDefault();
  const params = {};
  let date = null;
  for (const [k, v] of new FormData(form)) {
    if (k.startsWith("param:")) params[k.slice(6)] = v;
    else if (k === "date" && v) date = v;
  }
  const name = form.dataset.workflow;
  if (!window.confirm("Start a run of " + name + "?\n\nSame as: orchestrator trigger " + name)) return;
  try {
    const answer = await post("/api/trigger", { workflow: name, params, date });
    location.href = "/runs/" + encodeURIComponent(answer.run_id);
  } catch (err) {
    flash(err.message, true);
  }
});

// A big drawing (web/src/dag.rs): an empty SVG of its full size in a scrolling box, its
// shapes in a JSON script beside it: {templates, shapes: [[x, y, w, h, template,
// values...]]} in the SVG's units, values already escaped by the server. Only the shapes
// within the visible part of the box, plus a screen on every side, are in the DOM;
// scrolling redraws when the visible part has moved by half a screen.
let drawings = [];

// The server's `fill`: each {N} of the template replaced by value N.
function fill(template, row) {
  return template.replace(/\{(\d+)\}/g, (_, n) => {
    const v = row[5 + Number(n)];
    return v === undefined ? "" : String(v);
  });
}

function drawVisible(d) {
  const box = d.box.getBoundingClientRect(), svg = d.svg.getBoundingClientRect();
  const vw = d.svg.viewBox.baseVal.width || svg.width;
  const scale = svg.width ? vw / svg.width : 1;
  const mx = window.innerWidth, my = window.innerHeight;
  const left = Math.max(box.left, 0) - mx, right = Math.min(box.right, window.innerWidth) + mx;
  const top = Math.max(box.top, 0) - my, bottom = Math.min(box.bottom, window.innerHeight) + my;
  const x0 = (left - svg.left) * scale, x1 = (right - svg.left) * scale;
  const y0 = (top - svg.top) * scale, y1 = (bottom - svg.top) * scale;
  const step = (my / 2) * scale;
  const key = [x0, x1, y0, y1].map(v => Math.round(v / step)).join();
  if (key === d.key) return;
  d.key = key;
  const parts = [d.fixed];
  for (const row of d.data.shapes) {
    const [x, y, w, h, t] = row;
    if (x <= x1 && x + w >= x0 && y <= y1 && y + h >= y0) parts.push(fill(d.data.templates[t], row));
  }
  d.svg.innerHTML = parts.join("");
  d.svg.dataset.drawn = String(parts.length - 1);
}

let drawQueued = false;
function redraw() {
  if (drawQueued) return;
  drawQueued = true;
  requestAnimationFrame(() => {
    drawQueued = false;
    for (const d of drawings) drawVisible(d);
  });
}
window.addEventListener("scroll", redraw, { passive: true });
window.addEventListener("resize", redraw);

// Task sections past the first ones: a marker stands for the rest and is replaced by the
// next chunk as it comes near the screen (or, for a link to a task not loaded yet, by all
// the sections up to it).
async function loadTasks(marker, until) {
  if (marker.dataset.loading) return;
  marker.dataset.loading = "1";
  const q = "?fragment=tasks&from=" + encodeURIComponent(marker.dataset.from) +
    (until ? "&until=" + encodeURIComponent(until) : "");
  try {
    const r = await fetch(location.pathname + q, { credentials: "same-origin" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    marker.insertAdjacentHTML("beforebegin", await r.text());
    const parent = marker.parentNode;
    marker.remove();
    enhanceMarkers(parent);
  } catch (err) {
    delete marker.dataset.loading;
    flash("Loading tasks: " + err.message, true);
  }
}

const nearScreen = window.IntersectionObserver
  ? new IntersectionObserver(entries => {
      for (const e of entries) if (e.isIntersecting) { nearScreen.unobserve(e.target); loadTasks(e.target); }
    }, { rootMargin: "100% 0px" })
  : null;

function enhanceMarkers(root) {
  for (const m of root.querySelectorAll(".more-tasks")) if (nearScreen) nearScreen.observe(m);
}

// Shows the section of task `id`, loading the sections up to it when it is not loaded yet.
async function showTask(id) {
  let el = document.getElementById("task-" + id);
  if (!el) {
    const marker = document.querySelector("#tasks .more-tasks");
    if (!marker) return;
    await loadTasks(marker, id);
    el = document.getElementById("task-" + id);
  }
  if (el) el.scrollIntoView();
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a");
  const href = a && a.getAttribute("href");
  if (!href || !href.startsWith("#task-")) return;
  const id = decodeURIComponent(href.slice(6));
  if (document.getElementById("task-" + id)) return;
  e.preventDefault();
  history.pushState(null, "", href);
  showTask(id);
});

function enhance(root) {
  drawings = drawings.filter(d => d.box.isConnected);
  for (const box of root.querySelectorAll("[data-virtual]")) {
    const svg = box.querySelector("svg[data-shapes]");
    const data = svg && document.getElementById(svg.dataset.shapes);
    if (!data) continue;
    let parsed;
    try { parsed = JSON.parse(data.textContent); } catch (_) { continue; }
    const d = { box, svg, data: parsed, fixed: svg.innerHTML, key: null };
    drawings.push(d);
    box.addEventListener("scroll", redraw, { passive: true });
    drawVisible(d);
  }
  enhanceMarkers(root);
}

document.addEventListener("DOMContentLoaded", () => {
  for (const r of document.querySelectorAll("[data-events]")) live(r);
  enhance(document);
  if (location.hash.startsWith("#task-")) {
    const id = decodeURIComponent(location.hash.slice(6));
    if (!document.getElementById("task-" + id)) showTask(id);
  }
});
