// Flex Edge fleet page: draws what the cloud's API says. The server decides who sees what; the page only
// renders the JSON it is given and posts the operator's actions with the session's CSRF token.
"use strict";

const $ = (id) => document.getElementById(id);
let me = null; // {name, role, station, csrf}
let fleet = null;
let selected = null; // device id
let vanDoc = null;
let proofOf = null; // [device, stop] of the open proof: live updates refresh it (a photo arrives after its event)
let shown = { van: "", proof: "" }; // the JSON on screen: a refresh that changes nothing redraws nothing
let stream = null;
let analyticsAt = 0; // when the figures were last fetched: live updates refetch them at most every few seconds
const ANALYTICS_EVERY_MS = 3000;
const PENDING_WARN_S = 600; // an event waiting longer than this for the cloud is shown in red

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") el.addEventListener("click", v);
    else if (v !== null && v !== undefined) el.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : String(c));
  return el;
}

const words = (s) => String(s ?? "–").replace(/_/g, " ");
const pct = (x) => (x === null || x === undefined ? "–" : Math.round(x * 100) + "%");

// On a phone the tables fold into one card per row (style.css): each cell is labelled with its column's header.
function labelled(table) {
  const names = [...table.tHead.rows[0].cells].map((th) => th.textContent);
  for (const tr of table.tBodies[0].rows) [...tr.cells].forEach((td, i) => { td.dataset.label = names[i] || ""; });
}

function toast(text) {
  $("toast").textContent = text || "";
  $("toast").className = text ? "show" : "";
}

function ago(when) { // an ISO time or epoch seconds
  if (!when) return "never";
  const s = Math.max(0, (Date.now() - (typeof when === "number" ? when * 1000 : Date.parse(when))) / 1000);
  return s < 90 ? Math.round(s) + " s ago" : s < 5400 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
}

function duration(s) { // seconds -> "42 s", "7 min", "3 h", "2 d"
  if (s === null || s === undefined) return "–";
  return s < 90 ? Math.round(s) + " s" : s < 5400 ? Math.round(s / 60) + " min" : s < 172800 ?
    Math.round(s / 3600) + " h" : Math.round(s / 86400) + " d";
}

// --- talking to the cloud ---------------------------------------------------------------------------

async function api(path) {
  const r = await fetch("/api/" + path, { credentials: "same-origin" });
  if (r.status === 401) { showLogin(); return null; }
  const doc = await r.json();
  if (!r.ok) { toast(doc.error || r.statusText); return null; }
  return doc;
}

async function post(path, body) {
  const r = await fetch("/api/" + path, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Flexedge-CSRF": me ? me.csrf : "" },
    body: JSON.stringify(body || {}),
  });
  let doc = {};
  try { doc = await r.json(); } catch (e) { doc = { error: r.statusText }; }
  if (!r.ok) toast(doc.error || r.statusText);
  return r.ok ? doc : null;
}

function showLogin() {
  if (stream) { stream.close(); stream = null; }
  $("app").hidden = true;
  $("login").hidden = false;
  $("logout").hidden = true;
  $("live").hidden = true;
  $("who").textContent = "";
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await fetch("/api/login", {
    method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name: $("login-name").value, password: $("login-password").value }),
  });
  const doc = await r.json();
  if (!r.ok) { $("login-error").textContent = doc.error || "log-in failed"; return; }
  $("login-error").textContent = "";
  $("login-password").value = "";
  me = doc;
  start();
});

$("logout").addEventListener("click", async () => { await post("logout"); me = null; showLogin(); });

async function start() {
  if (!me) me = await api("me");
  if (!me) return;
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  $("who").textContent = me.name + " · " + (me.station ? "station " + me.station : "all stations");
  const doc = await api("fleet");
  if (doc) renderFleet(doc);
  loadAnalytics();
  if (stream) stream.close();
  stream = new EventSource("/api/events");
  stream.addEventListener("fleet", (e) => {
    $("live").hidden = false;
    $("live").className = "pill";
    renderFleet(JSON.parse(e.data));
  });
  stream.onerror = () => { $("live").textContent = "RECONNECTING"; $("live").className = "pill down"; };
  stream.onopen = () => { $("live").textContent = "LIVE"; $("live").className = "pill"; };
}

// --- the fleet --------------------------------------------------------------------------------------

function renderFleet(doc) {
  fleet = doc;
  $("vans").tBodies[0].replaceChildren(...doc.vans.map((v) => h("tr", {
    "data-device": v.device, class: v.device === selected ? "selected" : "", onclick: () => selectVan(v.device),
  },
    h("td", {}, v.device),
    h("td", { class: "link-" + v.link, "data-testid": "link-" + v.device,
      title: v.offline_at ? "offline since " + new Date(v.offline_at * 1000).toISOString() : null }, v.link),
    h("td", {}, ago(v.status_ts || v.last_batch_at)),
    h("td", { "data-testid": "outbox-" + v.device }, v.outbox_depth ?? "–"),
    h("td", { "data-testid": "pending-" + v.device, "data-seconds": v.oldest_pending_s ?? "",
      class: v.oldest_pending_s > PENDING_WARN_S ? "flag" : "" }, duration(v.oldest_pending_s)),
    h("td", {}, (v.last_ack_seq ?? "–") + " / " + v.verified_seq),
    h("td", {}, v.block ? `${v.block} ${v.stops_done}/${v.stops}` : "no block"),
    h("td", { class: v.flags || v.clock_flags ? "flag" : "", "data-testid": "flags-" + v.device },
      (v.flags ? v.flags + " integrity" : "") + (v.flags && v.clock_flags ? " · " : "") +
      (v.clock_flags ? v.clock_flags + " clock" : "") || "–"),
  )));
  labelled($("vans"));
  $("blocks").tBodies[0].replaceChildren(...doc.blocks.map((b) => h("tr", { "data-block": b.id },
    h("td", {}, b.id), h("td", {}, b.station), h("td", {}, b.winner || "–", withdrawal(b)),
    h("td", {}, `${b.done}/${b.stops}`),
    h("td", { class: "state-" + b.state, "data-testid": "block-state-" + b.id }, words(b.state)),
    h("td", {}, b.winner ? h("button", { "data-testid": "reoffer-" + b.id, onclick: (e) => reoffer(e, b.id) },
      "Re-offer") : ""),
  )));
  labelled($("blocks"));
  drawMap();
  if (selected) loadVan(selected);
  if (proofOf) loadProof(...proofOf);
  if (Date.now() - analyticsAt > ANALYTICS_EVERY_MS) loadAnalytics();
}

// A block taken back from a van: whom from, and whether that van has answered its withdraw_block yet.
function withdrawal(b) {
  const w = b.withdrawn;
  if (!w || b.winner) return "";
  const told = { sent: "told, no answer yet", ok: "van confirmed", rejected: "van refused", failed: "van failed",
    expired: "van never answered" }[w.told] || w.told;
  const back = w.return_packages && w.return_packages.length ? ` · ${w.return_packages.length} packages to return` : "";
  return h("div", { class: "withdrawn" + (w.told === "ok" ? "" : " flag"), "data-testid": "withdrawn-" + b.id,
    "data-told": w.told, title: w.detail || "" }, `taken from ${w.device}: ${told}${back}`);
}

async function reoffer(e, blockId) {
  e.stopPropagation();
  if (!window.confirm(`Put ${blockId} back on offer? Its van loses it and is told to return what it holds.`)) return;
  const doc = await post(`blocks/${encodeURIComponent(blockId)}/reoffer`);
  if (doc) toast(`${blockId} is on offer again` + (doc.winner ? `; ${doc.winner} was told` : ""));
}

// --- the map: an equirectangular drawing fitted to what is shown (no tiles, no network) ---------------

function drawMap() {
  const map = $("map");
  const W = 600, H = 360, PAD = 24;
  const vans = (fleet ? fleet.vans : []).filter((v) => v.position && v.position.lat !== undefined);
  const stops = vanDoc ? vanDoc.stops : [];
  const track = vanDoc ? vanDoc.track.filter((f) => f.lat !== undefined) : [];
  const pts = [...vans.map((v) => [v.position.lat, v.position.lon]), ...stops.map((s) => [s.lat, s.lon]),
    ...track.map((f) => [f.lat, f.lon])];
  map.replaceChildren();
  if (!pts.length) { map.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no positions yet")); return; }
  const lats = pts.map((p) => p[0]), lons = pts.map((p) => p[1]);
  const k = Math.cos((Math.min(...lats) + Math.max(...lats)) / 2 * Math.PI / 180);
  const spanX = Math.max((Math.max(...lons) - Math.min(...lons)) * k, 1e-4);
  const spanY = Math.max(Math.max(...lats) - Math.min(...lats), 1e-4);
  const scale = Math.min((W - 2 * PAD) / spanX, (H - 2 * PAD) / spanY);
  const x0 = (W - spanX * scale) / 2, y0 = (H - spanY * scale) / 2;
  const X = (lon) => (x0 + (lon - Math.min(...lons)) * k * scale).toFixed(1);
  const Y = (lat) => (H - y0 - (lat - Math.min(...lats)) * scale).toFixed(1);
  if (stops.length) map.append(svg("polyline", { class: "route", points: stops.map((s) => X(s.lon) + "," + Y(s.lat)).join(" ") }));
  if (track.length > 1) map.append(svg("polyline", { class: "track", points: track.map((f) => X(f.lon) + "," + Y(f.lat)).join(" ") }));
  stops.forEach((s, i) => {
    const g = svg("g", { "data-stop": s.id });
    g.append(svg("circle", { class: "stop" + (s.outcome ? " done" : ""), cx: X(s.lon), cy: Y(s.lat), r: 7 }));
    g.append(svg("text", { x: X(s.lon), y: Y(s.lat) - 10, "text-anchor": "middle" }, String(i + 1)));
    g.addEventListener("click", () => loadProof(vanDoc.device, s.id));
    map.append(g);
  });
  for (const v of vans) {
    const g = svg("g", { class: "van " + v.link, "data-van": v.device, "data-testid": "van-" + v.device });
    const x = Number(X(v.position.lon)), left = x > W / 2; // labels point inwards: none cut at the edge
    g.append(svg("circle", { cx: x, cy: Y(v.position.lat), r: 9 }));
    g.append(svg("text", { x: left ? x - 12 : x + 12, y: Number(Y(v.position.lat)) + 4,
      "text-anchor": left ? "end" : "start" }, v.device + (v.block ? ` ${v.stops_done}/${v.stops}` : "")));
    g.addEventListener("click", () => selectVan(v.device));
    map.append(g);
  }
}

// --- one van, one stop ---------------------------------------------------------------------------------

function selectVan(device) {
  selected = device;
  proofOf = null;
  shown = { van: "", proof: "" };
  $("proof-panel").hidden = true;
  for (const tr of $("vans").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.device === device);
  loadVan(device);
  document.dispatchEvent(new CustomEvent("flexedge:van-selected", { detail: device })); // commands.js
}

async function loadVan(device) {
  const doc = await api("vans/" + encodeURIComponent(device));
  if (!doc || device !== selected) return;
  const text = JSON.stringify(doc);
  if (text === shown.van) return;
  shown.van = text;
  vanDoc = doc;
  $("van-panel").hidden = false;
  $("van-title").textContent = `${doc.device} · ${doc.block || "no block"}`;
  const flags = [...doc.flags.map((f) => `integrity: ${words(f.kind)} at #${f.seq}`),
    ...doc.clock_flags.map((f) => `clock: ${words(f.kind)} at #${f.seq} (${f.jump_s.toFixed(0)} s)`)];
  $("van-flags").replaceChildren(...flags.map((t) => h("div", { class: "flag" }, t)));
  $("stops").tBodies[0].replaceChildren(...doc.stops.map((s, i) => h("tr", {
    "data-stop": s.id, "data-testid": "stop-" + s.id, onclick: () => loadProof(doc.device, s.id),
  },
    h("td", {}, i + 1), h("td", {}, s.address),
    h("td", {}, s.window_end ? "by " + s.window_end.slice(11, 16) : "–"),
    h("td", { class: "state-" + (s.outcome || (s.overdue ? "overdue" : "open")) },
      s.outcome ? words(s.outcome) + (s.on_time === false ? " · late" : s.on_time ? " · on time" : "")
        : s.overdue ? "overdue" : "open"),
  )));
  labelled($("stops"));
  drawMap();
}

function photoView(device, item) {
  const check = item.data;
  const wrap = h("div", { class: "photo-wrap" });
  if (!item.photo_received) { wrap.append("photo not received yet"); return wrap; }
  if (item.photo_check !== "ok") wrap.append(h("div", { class: "flag", "data-testid": "photo-check" },
    "photo file check: " + words(item.photo_check)));
  const img = new Image();
  img.onload = () => {
    const view = svg("svg", { viewBox: `0 0 ${img.naturalWidth} ${img.naturalHeight}`, width: 320,
      "data-testid": "photo" });
    view.append(svg("image", { href: img.src, width: img.naturalWidth, height: img.naturalHeight }));
    if (check.box) {
      const [x, y, w, hgt] = check.box;
      view.append(svg("rect", { x, y, width: w, height: hgt, fill: "none", stroke: "#ff0", "stroke-width": 4,
        "data-testid": "photo-box" }));
    }
    wrap.append(view);
  };
  img.onerror = () => wrap.replaceChildren("the photo cannot be shown");
  img.src = `/api/vans/${encodeURIComponent(device)}/photos/${encodeURIComponent(check.photo_id)}`;
  return wrap;
}

function signatureView(strokes) {
  const all = strokes.flat();
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const minX = Math.min(...xs), minY = Math.min(...ys);
  const view = svg("svg", { class: "signature", "data-testid": "signature",
    viewBox: `${minX - 5} ${minY - 5} ${Math.max(...xs) - minX + 10} ${Math.max(...ys) - minY + 10}` });
  for (const s of strokes) view.append(svg("polyline", { points: s.map((p) => p.join(",")).join(" ") }));
  return view;
}

const fixText = (fix) => (fix && fix.lat !== undefined ? `GPS ${fix.lat.toFixed(5)}, ${fix.lon.toFixed(5)}` +
  (fix.eph !== undefined ? ` ±${Math.round(fix.eph)} m` : "") : "no GPS fix");

async function loadProof(device, stop) {
  const doc = await api(`vans/${encodeURIComponent(device)}/stops/${encodeURIComponent(stop)}`);
  if (!doc) return;
  const again = proofOf && proofOf[0] === device && proofOf[1] === stop;
  proofOf = [device, stop];
  const text = JSON.stringify(doc);
  if (again && text === shown.proof) return;
  shown.proof = text;
  $("proof-panel").hidden = false;
  $("proof-title").textContent = `${device} · stop ${stop}`;
  const items = doc.items.map((it) => {
    const d = it.data;
    const head = h("div", {}, h("b", {}, words(it.type)), " · ", (it.ts || "").slice(11, 19), " · ", fixText(it.fix),
      it.chain !== "ok" ? h("span", { class: "flag" }, " · chain " + it.chain) : "");
    const item = h("div", { class: "proof-item", "data-type": it.type }, head);
    if (it.type === "photo.checked") {
      item.append(h("div", { class: "verdict-" + d.verdict, "data-testid": "verdict" },
        `${words(d.verdict)} · read ${d.read ?? "nothing"} · expected ${d.expected} · confidence ${pct(d.confidence)}`));
      item.append(photoView(device, it));
    } else if (it.type === "delivery.signature" && d.strokes) {
      item.append(h("div", {}, "signed for " + (d.packages || []).join(", ")), signatureView(d.strokes));
    } else if (it.type === "delivery.exception") {
      item.append(h("div", { class: "bad" }, words(d.reason) + " · " + (d.packages || []).join(", ") +
        (d.note ? " · " + d.note : "")));
    } else if (it.type === "delivery.proof") {
      item.append(h("div", { class: "verdict-match" }, "delivered " + (d.packages || []).join(", ")));
    } else if (it.type === "stop.completed") {
      item.append(h("div", {}, words(d.outcome) + (d.on_time === false ? " · late" : d.on_time ? " · on time" : "")));
    }
    return item;
  });
  $("proof").replaceChildren(...(items.length ? items : [h("div", {}, "nothing recorded at this stop yet")]));
  if (!again) $("proof-panel").scrollIntoView({ block: "nearest" });
}

// --- analytics -------------------------------------------------------------------------------------------

async function loadAnalytics() {
  if (!$("day").value) $("day").value = new Date().toISOString().slice(0, 10);
  const day = $("day").value;
  analyticsAt = Date.now();
  $("export").href = "/api/export.csv?day=" + day;
  const doc = await api("analytics?day=" + day);
  if (!doc) return;
  const ratios = doc.metrics.filter((m) => m.key !== "exceptions");
  $("analytics").tHead.replaceChildren(h("tr", {}, h("th", {}, "Van / driver"),
    ...doc.metrics.map((m) => h("th", { title: m.definition }, m.label))));
  $("analytics").tBodies[0].replaceChildren(...doc.rows.map((r) => h("tr", { "data-device": r.device },
    h("td", {}, r.device),
    ...ratios.map((m) => {
      const f = r[m.key];
      const text = !f ? "–" : m.percent ? `${pct(f.value)} (${f.num}/${f.den})`
        : m.key === "stops_per_hour" ? (f.value === null ? "–" : f.value.toFixed(1)) : String(f.num);
      return h("td", { "data-metric": m.key }, text);
    }),
    h("td", { "data-metric": "exceptions" },
      Object.entries(r.exceptions || {}).map(([k, n]) => `${words(k)} ${n}`).join(", ") || "–"),
  )));
  labelled($("analytics"));
  $("definitions").replaceChildren(...doc.metrics.flatMap((m) => [h("dt", {}, m.label), h("dd", {}, m.definition)]));
}

$("day").addEventListener("change", loadAnalytics);

start();
