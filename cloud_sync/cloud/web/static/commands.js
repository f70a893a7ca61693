// The selected van's commands: a form to send one (the server decides who may send what and checks the
// arguments), and the van's newest commands with who sent them and the van's answer, live over server-sent
// events. Uses app.js's helpers (h, post, api, toast, words) and its session (me).
"use strict";

const COMMAND_HINTS = {
  selftest: "no arguments",
  restart: "no arguments",
  upload_logs: "since_s=3600   (or since=2026-11-29T06:00:00Z)",
  set_config: "section.key=value, one a line   (e.g. sync.status_interval_s=30)",
  update: "key=value, one a line",
};
const CONFIRM = { restart: "restart", set_config: "change the config of", update: "update" };
let commandVan = null;
let commandStream = null;

function commandSection(device, allowed) {
  $("command-panel").hidden = false;
  $("command-title").textContent = `Commands · ${device}`;
  const select = $("command-name");
  const keep = select.value;
  select.replaceChildren(...allowed.map((name) => h("option", { value: name }, name)));
  if (allowed.includes(keep)) select.value = keep;
  commandHint();
}

function commandHint() {
  const name = $("command-name").value;
  const none = name === "selftest" || name === "restart";
  $("command-args").disabled = none;
  if (none) $("command-args").value = "";
  $("command-args").placeholder = COMMAND_HINTS[name] || "key=value";
}

function resultView(item) {
  const data = item.data || {};
  const parts = [];
  if (item.blob) {
    parts.push(h("a", {
      href: `/api/vans/${encodeURIComponent(item.device)}/blobs/${encodeURIComponent(item.blob.id)}`,
      download: `${item.device}-${item.blob.id}.log.gz`, "data-testid": "blob-" + item.id,
    }, `download log (${item.blob.size ?? "?"} bytes gzip)`));
    if (item.blob.check !== "ok") parts.push(h("span", { class: "flag" },
      " · " + (item.blob.check ? "file check: " + words(item.blob.check) : "file not received yet")));
  }
  if (data.counts) parts.push(h("div", {}, Object.entries(data.counts).map(([k, n]) => `${k} ${n}`).join(" · ")));
  if (Object.keys(data).length) {
    const more = h("details", {}, h("summary", {}, "data"), h("pre", {}, JSON.stringify(data, null, 1)));
    parts.push(more);
  }
  return parts;
}

function renderCommands(doc) {
  if (!doc || doc.device !== commandVan) return;
  $("commands").replaceChildren(...(doc.commands.length ? doc.commands.map((c) => h("div", {
    class: "command-item", "data-command": c.id, "data-testid": "command-" + c.name,
  },
    h("div", {}, h("b", {}, c.name), c.args && Object.keys(c.args).length ? " " + JSON.stringify(c.args) : "",
      " · ", h("span", { class: "status-" + c.status, "data-testid": "command-status" }, words(c.status)),
      c.detail ? " · " + c.detail : ""),
    h("div", { class: "who", "data-testid": "command-who" },
      (c.operator ? `sent by ${c.operator} ${c.sent_at ? "at " + c.sent_at.replace("T", " ") : ""}`
        : "sent from the command line") + ` · id ${c.id}` +
      (c.answered_at ? ` · answered ${c.answered_at.slice(11, 19)}` : "")),
    ...resultView(c),
  )) : [h("div", {}, "no commands sent to this van yet")]));
}

async function openCommands(device) {
  if (commandStream) { commandStream.close(); commandStream = null; }
  commandVan = device;
  const doc = await api(`vans/${encodeURIComponent(device)}/commands`);
  if (!doc || commandVan !== device) return;
  commandSection(device, doc.allowed);
  renderCommands(doc);
  commandStream = new EventSource(`/api/vans/${encodeURIComponent(device)}/commands/events`);
  commandStream.addEventListener("commands", (e) => renderCommands(JSON.parse(e.data)));
}

$("command-name").addEventListener("change", commandHint);

$("command-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const device = commandVan, name = $("command-name").value;
  if (!device || !name) return;
  if (CONFIRM[name] && !window.confirm(`${CONFIRM[name]} ${device}?`)) return;
  const pairs = $("command-args").value.split("\n").map((l) => l.trim()).filter((l) => l);
  const sent = await post(`vans/${encodeURIComponent(device)}/commands`, { name, pairs });
  if (!sent) return;
  toast(`${name} sent to ${device} (id ${sent.id})`);
  $("command-args").value = "";
  renderCommands(await api(`vans/${encodeURIComponent(device)}/commands`));
});

document.addEventListener("flexedge:van-selected", (e) => openCommands(e.detail));
