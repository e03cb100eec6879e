// The UI's only script (no framework, no build): live regions over server-sent events,
// confirmed POST buttons, and the trigger form. Pages work without it, minus liveness
// and actions.
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
      const r = await fetch(location.pathname + location.search + sep + "partial=1", { credentials: "same-origin" });
      if (r.ok) {
        const open = new Set([...region.querySelectorAll("details[open]")].map(d => d.closest("[data-task]")?.dataset.task + "/" + d.querySelector("summary")?.textContent));
        region.innerHTML = await r.text();
        for (const d of region.querySelectorAll("details")) {
          if (open.has(d.closest("[data-task]")?.dataset.task + "/" + d.querySelector("summary")?.textContent)) d.open = true;
        }
        document.body.dataset.updated = String(Date.now());
      }
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }
  const source = new EventSource(url);
  source.addEventListener("change", refresh);
  // Reconnects on its own; the first event after a reconnect is "hello": refresh then too.
  let connected = false;
  source.addEventListener("hello", () => { if (connected) refresh(); connected = true; });
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

document.addEventListener("DOMContentLoaded", () => {
  for (const r of document.querySelectorAll("[data-events]")) live(r);
});
