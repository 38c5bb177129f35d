// The fleet dashboard: reads /dashboard/api/fleet (this origin only) and draws the table and
// the chart. No library, no other origin.
"use strict";

const $ = (id) => document.getElementById(id);
const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#1b7c83", "#953800", "#57606a"];

function age(secs) {
  if (secs === null || secs === undefined) return "-";
  if (secs < 120) return secs + " s";
  if (secs < 7200) return Math.round(secs / 60) + " min";
  if (secs < 172800) return Math.round(secs / 3600) + " h";
  return Math.round(secs / 86400) + " days";
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
}

function table(data) {
  const now = Date.parse(data.at) / 1000;
  const body = document.querySelector("#vessels tbody");
  body.replaceChildren();
  const refused = {};
  for (const r of data.recent_refusals || []) refused[r.vessel] = (refused[r.vessel] || 0) + 1;
  let behind = 0;
  for (const v of data.vessels) {
    const tr = document.createElement("tr");
    tr.dataset.vessel = v.id;
    const state = v.revoked_at ? "revoked" : v.behind ? "BEHIND" : "ok";
    if (v.behind) { tr.className = "behind"; behind++; }
    if (v.revoked_at) tr.className = "revoked";
    cell(tr, v.id);
    cell(tr, state, "state");
    cell(tr, v.last_contact ? age(now - v.last_contact) + " ago" : "never");
    cell(tr, String(v.acked_seq));
    cell(tr, v.outbox_depth === null ? "-" : String(v.outbox_depth));
    cell(tr, age(v.oldest_unsent));
    cell(tr, String(v.link_rate_per_hour));
    cell(tr, v.drain_secs === null ? "-" : age(v.drain_secs));
    const held = v.held_deletions || [];
    const learners = held.reduce((n, h) => n + (h.learners || 0), 0);
    cell(tr, held.length ? held.length + " (" + learners + " learners)" : "-");
    cell(tr, String(refused[v.id] || 0));
    body.appendChild(tr);
  }
  $("summary").textContent = data.vessels.length + " vessels, " + behind + " behind";
  $("at").textContent = "as of " + data.at;
}

function chart(data) {
  const c = $("chart");
  const g = c.getContext("2d");
  const W = c.width, H = c.height, L = 60, R = 60, T = 16, B = 28;
  g.fillStyle = "#ffffff";
  g.fillRect(0, 0, W, H);
  const now = Date.parse(data.at) / 1000;
  const t0 = now - 30 * 86400;
  const series = data.vessels.map((v) => ({ id: v.id, points: (data.history || {})[v.id] || [] }));
  let maxDepth = 1, maxLag = 3600;
  for (const s of series) for (const p of s.points) {
    maxDepth = Math.max(maxDepth, p.depth || 0);
    maxLag = Math.max(maxLag, p.oldest_unsent || 0);
  }
  const x = (t) => L + ((t - t0) / (now - t0)) * (W - L - R);
  const yD = (d) => H - B - (d / maxDepth) * (H - T - B);
  const yL = (s) => H - B - (s / maxLag) * (H - T - B);
  g.strokeStyle = "#8c959f";
  g.lineWidth = 1;
  g.strokeRect(L, T, W - L - R, H - T - B);
  g.fillStyle = "#57606a";
  g.font = "12px sans-serif";
  g.fillText(String(maxDepth), 4, T + 10);
  g.fillText("records", 4, T + 24);
  g.fillText(age(maxLag), W - R + 4, T + 10);
  g.fillText("lag", W - R + 4, T + 24);
  g.fillText("30 days ago", L, H - 8);
  g.fillText("now", W - R - 24, H - 8);
  const legend = $("legend");
  legend.replaceChildren();
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.setLineDash([]);
    g.beginPath();
    s.points.forEach((p, j) => {
      const px = x(p.hour), py = yD(p.depth || 0);
      if (j === 0) g.moveTo(px, py); else g.lineTo(px, py);
    });
    if (s.points.length === 1) g.arc(x(s.points[0].hour), yD(s.points[0].depth || 0), 3, 0, 7);
    g.stroke();
    g.setLineDash([4, 3]);
    g.beginPath();
    s.points.forEach((p, j) => {
      const px = x(p.hour), py = yL(p.oldest_unsent || 0);
      if (j === 0) g.moveTo(px, py); else g.lineTo(px, py);
    });
    g.stroke();
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = color;
    legend.appendChild(sw);
    legend.appendChild(document.createTextNode(s.id));
  });
  legend.appendChild(document.createTextNode("  (solid: records waiting on board; dashed: age of the oldest)"));
}

async function load() {
  const r = await fetch("/dashboard/api/fleet", { credentials: "same-origin", cache: "no-store" });
  if (r.status === 401) {
    $("fleet").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    return;
  }
  if (!r.ok) throw new Error("the fleet data: HTTP " + r.status);
  const data = await r.json();
  $("login").hidden = true;
  $("fleet").hidden = false;
  $("logout").hidden = false;
  table(data);
  chart(data);
  document.body.dataset.loaded = "yes";
}

$("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await fetch("/dashboard/login", {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ password: $("password").value }),
  });
  $("password").value = "";
  if (!r.ok) {
    $("login-error").textContent = r.status === 401 ? "Wrong password." : "Login failed (HTTP " + r.status + ").";
    document.body.dataset.refused = "yes";
    return;
  }
  $("login-error").textContent = "";
  await load();
});

$("logout").addEventListener("click", async () => {
  await fetch("/dashboard/logout", { method: "POST", credentials: "same-origin" });
  await load();
});

load().catch((e) => { $("summary").textContent = String(e); });
setInterval(() => { if (!$("fleet").hidden) load().catch(() => {}); }, 60000);
