// Flex Edge console: renders the agent's state and sends the driver's actions. It decides nothing: every
// action is a POST the agent's workflow accepts or refuses, and the page shows what the agent says.
"use strict";

const $ = (id) => document.getElementById(id);
let state = null;
let stream = null;
let lastPhoto = null; // {stop, photo_id, verdict, read, expected, box}
let strokes = [];

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") el.addEventListener("click", v);
    else el.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

function svg(tag, attrs) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
}

const words = (s) => String(s || "").replace(/_/g, " ");

function toast(text, tone) {
  const t = $("toast");
  t.textContent = text;
  t.className = "show " + (tone || "");
}

// --- talking to the agent -----------------------------------------------------------------------------

async function post(path, body) {
  const r = await fetch("/api/" + path, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Flexedge-Request": "console" },
    body: JSON.stringify(body || {}),
  });
  let doc = {};
  try { doc = await r.json(); } catch (e) { doc = { error: r.statusText }; }
  if (r.status === 401 && path !== "pair") { showPairing(); return null; }
  if (!r.ok) toast(doc.error || (doc.rejection && doc.rejection.detail) || r.statusText, "error");
  else for (const n of doc.notices || []) onNotice(n);
  return doc;
}

async function start() {
  const r = await fetch("/api/view", { credentials: "same-origin" });
  if (r.status === 401) { showPairing(); return; }
  render(await r.json());
  if (stream) stream.close();
  stream = new EventSource("/api/events");
  stream.addEventListener("state", (e) => render(JSON.parse(e.data)));
  stream.addEventListener("notice", (e) => onNotice(JSON.parse(e.data)));
  stream.onerror = () => { $("sync").textContent = "AGENT UNREACHABLE"; $("sync").className = "pill offline"; };
}

// --- pairing ------------------------------------------------------------------------------------------

async function showPairing() {
  for (const s of document.querySelectorAll("main > section, #manual-scan")) s.hidden = true;
  $("pair").hidden = false;
  $("phase").textContent = "not paired";
  const r = await fetch("/api/pairing-code");
  if (r.ok) {
    const doc = await r.json();
    $("pair-code-shown").textContent = doc.code;
    $("pair-code-shown").hidden = false;
    $("pair-code-label").hidden = false;
  }
}

$("pair-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const doc = await post("pair", { code: $("pair-code").value.trim() });
  if (doc && doc.paired) { $("pair").hidden = true; $("pair-error").textContent = ""; start(); }
  else $("pair-error").textContent = (doc && doc.error) || "pairing failed";
});

// --- notices ------------------------------------------------------------------------------------------

const WARN = new Set(["scan_problem", "missing_packages", "retake_photo", "stop_left_open", "rejected",
  "route_revised", "route_resequenced", "signature_needed", "block_withdrawn"]);
const GOOD = new Set(["delivered", "claim", "load_progress", "route_staged", "block_summary"]);

function onNotice(n) {
  toast(n.text, WARN.has(n.kind) ? "warn" : GOOD.has(n.kind) ? "good" : "");
  if (n.kind === "stage_result") {
    const el = $("stage-result");
    el.replaceChildren(h("div", {}, n.text), h("div", { class: "stage-code" }, n.data.package || ""));
    el.className = "stage " + (n.data.reason ? "problem" : "ok");
  }
}

// --- rendering ----------------------------------------------------------------------------------------

function render(s) {
  state = s;
  $("pair").hidden = true;
  const v = s.view;
  $("phase").textContent = words(v.phase) + (v.block ? " · " + v.block : "");
  const sync = s.sync;
  const pill = $("sync");
  pill.hidden = false;
  pill.textContent = (!sync.configured ? "NO CLOUD LINK" : sync.online ? "ONLINE" : "OFFLINE") +
    " · outbox " + sync.outbox_depth;
  pill.className = "pill " + (sync.online ? "online" : "offline");
  if (v.role === "dock") return renderDock(v);
  const phase = v.phase;
  show("offers", ["idle", "offered", "claiming"].includes(phase));
  show("loading", ["claimed", "loading"].includes(phase));
  show("route", ["on_route", "at_stop"].includes(phase));
  // A finished stop stays "current" until the van leaves it: then the next stop is what matters.
  const cur = v.stops.find((x) => x.id === v.current_stop);
  const working = phase === "at_stop" && cur && !cur.done;
  show("stop", working);
  show("summary", phase === "block_complete");
  show("dock", false);
  show("manual-scan", phase === "loading");
  renderOffers(v);
  if (phase === "claimed" || phase === "loading") renderLoad(v);
  if (phase === "on_route" || phase === "at_stop") { renderMap(v, s); renderStopCard(v, s); }
  $("map").toggleAttribute("hidden", Boolean(working)); // at the door the stop's details and the actions need the room
  if (working) renderStop(v);
  else { lastPhoto = null; strokes = []; }
  if (phase === "block_complete") renderSummary(v, s);
}

function show(id, on) { $(id).hidden = !on; }

function renderOffers(v) {
  const list = $("offer-list");
  list.replaceChildren();
  // A block the station took back: the driver returns what the van still holds (until the next block is won).
  const w = v.withdrawn;
  if (w) list.append(h("div", { class: "card problem", "data-testid": "withdrawn" },
    h("div", { class: "big" }, `Block ${w.block} was taken back`),
    h("div", {}, w.return_packages.length ? "Return to the station: " + w.return_packages.join(", ")
      : "Nothing to return.")));
  if (!v.offers.length) list.append(h("p", {}, "No blocks offered yet. Waiting for the station."));
  for (const b of v.offers) {
    const claiming = v.claiming === b.id;
    list.append(h("div", { class: "card offer", "data-block": b.id },
      h("div", {}, h("div", { class: "big" }, b.id + (b.area ? " · " + b.area : "")),
        h("div", {}, b.starts_at.slice(11, 16) + "–" + b.ends_at.slice(11, 16) + " UTC · $" +
          (b.pay_cents / 100).toFixed(2))),
      h("button", { class: "primary", "data-testid": "claim-" + b.id, onclick: () => post("claim", { block_id: b.id }) },
        claiming ? "Claiming…" : "Claim")));
  }
}

function renderLoad(v) {
  const pkgs = v.load.packages;
  const ids = Object.keys(pkgs);
  const loaded = ids.filter((p) => pkgs[p] === "loaded").length;
  $("load-count").textContent = loaded + " / " + ids.length;
  const stopOf = {};
  for (const st of v.stops) for (const p of st.packages) stopOf[p.id] = st;
  const body = $("load-table").tBodies[0];
  body.replaceChildren();
  // Missing first, then still expected, then loaded: what needs the driver's eyes is on top.
  const rank = { missing: 0, expected: 1, loaded: 2 };
  ids.sort((a, b) => (rank[pkgs[a]] ?? 3) - (rank[pkgs[b]] ?? 3) || a.localeCompare(b));
  for (const p of ids) {
    const st = stopOf[p];
    body.append(h("tr", { class: pkgs[p], "data-package": p },
      h("td", {}, p), h("td", {}, st ? st.address : ""), h("td", { class: "state" }, words(pkgs[p]))));
  }
  const extra = $("extra-list");
  extra.replaceChildren();
  for (const [code, reason] of Object.entries(v.load.extra)) {
    extra.append(h("div", { class: "card", "data-extra": code }, code + ": " + words(reason) +
      " — take it out of the van"));
  }
  $("loading-done").hidden = v.phase !== "loading";
}

function renderMap(v, s) {
  const map = $("map");
  map.replaceChildren();
  const pts = v.stops.map((st) => [st.lat, st.lon]);
  if (s.position) pts.push([s.position.lat, s.position.lon]);
  if (!pts.length) return;
  const lats = pts.map((p) => p[0]), lons = pts.map((p) => p[1]);
  const midLat = (Math.min(...lats) + Math.max(...lats)) / 2;
  const k = Math.cos(midLat * Math.PI / 180); // equirectangular: a degree of longitude is shorter
  const x0 = Math.min(...lons) * k, x1 = Math.max(...lons) * k, y0 = Math.min(...lats), y1 = Math.max(...lats);
  const W = 400, H = 300, pad = 30;
  const scale = Math.min((W - 2 * pad) / Math.max(x1 - x0, 1e-6), (H - 2 * pad) / Math.max(y1 - y0, 1e-6));
  const X = (lon) => pad + (lon * k - x0) * scale + ((W - 2 * pad) - (x1 - x0) * scale) / 2;
  const Y = (lat) => H - pad - (lat - y0) * scale - ((H - 2 * pad) - (y1 - y0) * scale) / 2;
  map.append(svg("polyline", { points: v.stops.map((st) => X(st.lon) + "," + Y(st.lat)).join(" "),
    fill: "none", stroke: "#000", "stroke-width": 4, "stroke-linejoin": "round" }));
  v.stops.forEach((st, i) => {
    const here = st.id === v.current_stop, next = st.id === v.next_stop;
    const g = svg("g", { "data-stop": st.id, class: here ? "current" : next ? "next" : st.done ? "done" : "open" });
    g.append(svg("circle", { cx: X(st.lon), cy: Y(st.lat), r: here || next ? 15 : 11,
      fill: here ? "#0a6b1f" : next ? "#ffd400" : st.done ? "#888" : "#fff", stroke: "#000", "stroke-width": 3 }));
    const label = svg("text", { x: X(st.lon), y: Y(st.lat) + 6, "text-anchor": "middle", "font-size": 16,
      "font-weight": 800, fill: here ? "#fff" : "#000" });
    label.textContent = i + 1;
    g.append(label);
    map.append(g);
  });
  if (s.position) {
    const x = X(s.position.lon), y = Y(s.position.lat);
    map.append(svg("polygon", { points: `${x},${y - 14} ${x + 10},${y + 10} ${x},${y + 4} ${x - 10},${y + 10}`,
      fill: "#0040c0", stroke: "#fff", "stroke-width": 2, "data-testid": "van" }));
  }
}

function fmtDistance(m) { return m == null ? "–" : m >= 1000 ? (m / 1000).toFixed(1) + " km" : m + " m"; }
function fmtEta(s) { return s == null ? "–" : s < 60 ? "< 1 min" : Math.round(s / 60) + " min"; }

function instructionLines(p) {
  const parts = [words(p.instruction)];
  if (p.access_code) parts.push("code " + p.access_code);
  if (p.note) parts.push(p.note);
  if (p.signature_required) parts.push("signature");
  return h("div", { class: "instr", "data-package": p.id }, p.id + " · " + parts.join(" · ") + " · " + words(p.state));
}

function renderStopCard(v, s) {
  const card = $("stop-card");
  card.replaceChildren();
  const cur = v.stops.find((x) => x.id === v.current_stop);
  const here = cur && !cur.done ? cur : null;
  const st = here || v.stops.find((x) => x.id === v.next_stop);
  if (cur && cur.done) {
    card.append(h("div", { class: "big", "data-testid": "stop-done" }, cur.address + ": " + words(cur.outcome)));
  }
  if (!st) { card.append(h("p", { class: "big" }, "No open stop")); return; }
  if (here) card.append(h("div", { class: "big verdict-match" }, "At stop"));
  else {
    const ns = s.next_stop || {};
    card.append(h("div", {}, "Next stop"),
      h("div", { class: "distance", "data-testid": "distance" }, fmtDistance(ns.distance_m) + " · " + fmtEta(ns.eta_s)));
  }
  const eta = (v.etas || {})[st.id];
  card.append(h("div", { class: "big", "data-testid": "address" }, st.address),
    h("div", {}, "House number " + st.house_number + (st.window_end ? " · by " + st.window_end.slice(11, 16) : "")
      + (eta ? " · ETA " + eta.slice(11, 16) + " UTC" : "")));
  for (const p of st.packages) card.append(instructionLines(p));
  if (!here) {
    card.append(h("button", { "data-testid": "arrive", onclick: () => post("arrive", { stop_id: st.id }) },
      "I am here"));
  }
}

function renderStop(v) {
  const st = v.stops.find((x) => x.id === v.current_stop);
  if (!st) return;
  if (lastPhoto && lastPhoto.stop !== st.id) lastPhoto = null;
  const buttons = $("exception-buttons");
  if (!buttons.childElementCount) {
    for (const reason of ["no_access", "refused", "damaged", "unsafe"]) {
      buttons.append(h("button", { class: "danger", "data-testid": "exception-" + reason,
        onclick: () => post("exception", { reason }) }, words(reason)));
    }
  }
  $("take-photo").disabled = !state.camera;
  const needSign = st.packages.filter((p) => p.signature_required && p.state === "loaded").map((p) => p.id);
  $("sign-for").textContent = needSign.join(", ");
  show("sign-box", needSign.length > 0);
  show("photo-result", lastPhoto !== null);
}

function renderSummary(v, s) {
  const sum = s.block_summary || v.summary || {};
  const rows = [["Block", sum.block_id], ["Stops", sum.stops], ["Delivered", `${sum.delivered} / ${sum.packages}`],
    ["Exceptions", sum.exceptions], ["On time", sum.on_time_rate == null ? "–" : Math.round(sum.on_time_rate * 100) + " %"],
    ["Photo checks", Object.entries(sum.photo_checks || {}).map(([k, n]) => k + " " + n).join(", ") || "–"]];
  const body = $("summary-table").tBodies[0];
  body.replaceChildren(...rows.map(([k, val]) => h("tr", {}, h("th", {}, k), h("td", {}, val ?? "–"))));
}

function renderDock(v) {
  for (const id of ["offers", "loading", "route", "stop", "summary"]) show(id, false);
  show("dock", true);
  show("manual-scan", true);
  const body = $("route-counts").tBodies[0];
  body.replaceChildren();
  const routes = Object.entries(v.routes);
  if (!routes.length) body.append(h("tr", {}, h("td", {}, "No staging plan yet")));
  for (const [route, row] of routes.sort()) {
    body.append(h("tr", { class: row.complete ? "complete" : "", "data-route": route },
      h("td", {}, route), h("td", {}, `${row.staged} / ${row.total}`), h("td", {}, row.complete ? "STAGED" : "")));
  }
}

// --- the photo ----------------------------------------------------------------------------------------

$("take-photo").addEventListener("click", async () => {
  $("take-photo").disabled = true;
  toast("Taking photo…", "");
  const doc = await post("photo", {});
  $("take-photo").disabled = false;
  const checked = doc && (doc.events || []).find((e) => e.type === "photo.checked");
  if (!checked) return;
  lastPhoto = { stop: checked.stop, ...checked.data };
  showPhoto(lastPhoto);
});

function showPhoto(p) {
  const verdict = $("verdict");
  verdict.textContent = p.verdict === "match" ? `House number ${p.read} matches`
    : p.verdict === "mismatch" ? `Photo shows ${p.read}, this is ${p.expected}: retake`
    : `House number not readable: retake showing ${p.expected}`;
  verdict.className = "big verdict-" + p.verdict;
  verdict.dataset.verdict = p.verdict;
  const img = new Image();
  img.onload = () => {
    const view = $("photo-view");
    view.setAttribute("viewBox", `0 0 ${img.naturalWidth} ${img.naturalHeight}`);
    view.replaceChildren(svg("image", { href: img.src, width: img.naturalWidth, height: img.naturalHeight }));
    if (p.box) {
      const [x, y, w, hgt] = p.box;
      const stroke = Math.max(3, img.naturalWidth / 150);
      view.append(svg("rect", { x, y, width: w, height: hgt, fill: "none", "data-testid": "photo-box",
        stroke: p.verdict === "match" ? "#00d030" : "#ff2040", "stroke-width": stroke }));
    }
  };
  img.src = "/api/photo/" + encodeURIComponent(p.photo_id);
  show("photo-result", true);
  $("photo-result").scrollIntoView({ block: "start" });
}

// --- the signature pad --------------------------------------------------------------------------------

(function signaturePad() {
  const pad = $("pad");
  const ctx = pad.getContext("2d");
  let current = null;
  const point = (e) => {
    const r = pad.getBoundingClientRect();
    return [Math.round((e.clientX - r.left) * pad.width / r.width), Math.round((e.clientY - r.top) * pad.height / r.height)];
  };
  pad.addEventListener("pointerdown", (e) => { pad.setPointerCapture(e.pointerId); current = [point(e)]; strokes.push(current); });
  pad.addEventListener("pointermove", (e) => {
    if (!current) return;
    const [x, y] = point(e), [px, py] = current[current.length - 1];
    current.push([x, y]);
    ctx.lineWidth = 4; ctx.lineCap = "round"; ctx.strokeStyle = "#000";
    ctx.beginPath(); ctx.moveTo(px, py); ctx.lineTo(x, y); ctx.stroke();
  });
  const end = () => { current = null; };
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointercancel", end);
  const clear = () => { strokes = []; ctx.clearRect(0, 0, pad.width, pad.height); };
  $("sign-clear").addEventListener("click", clear);
  $("sign-send").addEventListener("click", async () => {
    const usable = strokes.filter((s) => s.length > 1);
    if (!usable.length) { toast("Sign in the box first", "warn"); return; }
    const doc = await post("signature", { strokes: usable });
    if (doc && doc.accepted) clear();
  });
})();

$("loading-done").addEventListener("click", () => post("loading-done", {}));
$("manual-scan").addEventListener("submit", async (e) => {
  e.preventDefault();
  const code = $("manual-code").value.trim();
  if (code) { await post("scan", { code }); $("manual-code").value = ""; }
});

start();
