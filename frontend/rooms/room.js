// A shared room's page: the members draw one canvas and all watch the model paint it.
//
// The member's strokes leave as they are drawn (a few points every FLUSH_MS), drawn here at once;
// the others' strokes and cursors come through the room's WebSocket and are drawn as they arrive.
// The room's driver on the server keeps the one true canvas: after the strokes settle it sends it,
// and it replaces what is drawn here (room_canvas.js). Parameters are shared: a change here goes to
// everyone. Results are the room's, the same for all.

import { decode, encode } from "@msgpack/msgpack";
import { addSwatches } from "../draw/palette.js";
import { RoomCanvas, SIZE } from "./room_canvas.js";

const FLUSH_MS = 30;
const CURSOR_MS = 60;
const PARAM_DEBOUNCE_MS = 150;
const $ = (/** @type {string} */ id) => /** @type {any} */ (document.getElementById(id));

const studio = $("studio");
const slug = studio.dataset.slug;
const isOwner = studio.dataset.owner === "1";
const ui = {
  canvas: $("canvas"), cursors: $("cursors"), members: $("room-members"), prompt: $("prompt"),
  strength: $("strength"), steps: $("steps"), seed: $("seed"), size: $("size"), color: $("color"),
  brush: $("brush"), eraser: $("eraser"), result: $("result"), placeholder: $("result-placeholder"),
  status: $("status"), error: $("error"), version: $("version"),
};
const csrf = /** @type {HTMLInputElement} */ (document.querySelector("[name=csrfmiddlewaretoken]")).value;

const room = new RoomCanvas(ui.canvas);
/** @type {WebSocket | undefined} */
let socket;
let me = { connection: "", user: 0, color: "#888888" };
let sent = 0; // this connection's op numbers
let strokeNumber = 0;
let erasing = false;
let resultUrl = "";
let retryMs = 1000;
let ended = false; // removed, or the room closed: no reconnecting
/** @type {{result: Blob, canvas: Uint8Array | undefined, params: Record<string, any>} | undefined} */
let latest; // the room's last result, for Keep
/** @type {{k: number, points: number[], timer: number | undefined} | undefined} */
let drawing;
window.roomPage = { room, version: () => Number(ui.version.textContent) }; // read by tests

function send(/** @type {any} */ message) {
  if (socket?.readyState !== WebSocket.OPEN) return;
  if (message.t !== "cursor") message.n = ++sent;
  socket.send(encode(message));
  return message.n;
}

// -- the connection --------------------------------------------------------------------------------

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(`${scheme}//${location.host}/rooms/${slug}/ws`);
  socket.binaryType = "arraybuffer";
  status("connecting");
  socket.onopen = () => { retryMs = 1000; status("open"); };
  socket.onmessage = (event) => handle(/** @type {any} */ (decode(new Uint8Array(event.data))));
  socket.onclose = (event) => {
    status("closed");
    if (ended || event.code === 4403 || event.code === 4404 || event.code === 4401) return;
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 8000);
  };
}

async function handle(/** @type {any} */ message) {
  switch (message.t) {
    case "welcome":
      me = { connection: message.connection, user: message.user, color: message.color };
      sent = 0;
      return;
    case "state":
      showParams(message.params);
      showMembers(message.members);
      if (message.result) showResult(message.result);
      return replaceCanvas(message);
    case "canvas":
      return replaceCanvas(message);
    case "op":
      return drawOp(message);
    case "cursor":
      return showCursor(message);
    case "members":
      return showMembers(message.members);
    case "result":
      return showResult(message);
    case "error":
      ui.error.textContent = `${message.error}: ${message.reason}`;
      ui.error.hidden = false;
      if (/removed you|was closed/.test(message.reason)) ended = true;
      return;
  }
}

let shownVersion = -1;
async function replaceCanvas(/** @type {any} */ message) {
  if (message.version < shownVersion) return; // an older canvas, overtaken
  shownVersion = message.version;
  shownCanvas = message.png;
  await room.replace(message.png, message.acked ?? {}, message.background);
  if (message.version === shownVersion) ui.version.textContent = String(message.version);
}

function drawOp(/** @type {any} */ { m, n, op }) {
  if (op.t === "down") room.down(m, n, op);
  else if (op.t === "move") room.move(m, n, op);
  else if (op.t === "up") room.up(m, op);
  else if (op.t === "fill") room.fill(m, n, op.c);
  else if (op.t === "clear") room.fill(m, n, "#ffffff");
  else if (op.t === "params") showParams(op.values);
}

function status(/** @type {string} */ state) {
  ui.status.textContent = { open: "connected", connecting: "connecting", closed: "disconnected" }[state] ?? state;
  ui.status.dataset.state = state;
}

// -- drawing ---------------------------------------------------------------------------------------

function point(/** @type {PointerEvent} */ e) {
  const box = ui.canvas.getBoundingClientRect();
  const x = ((e.clientX - box.left) / box.width) * SIZE;
  const y = ((e.clientY - box.top) / box.height) * SIZE;
  return [Math.round(x * 10) / 10, Math.round(y * 10) / 10];
}

function flush() {
  if (!drawing || drawing.points.length === 0) return;
  const op = { t: "move", k: drawing.k, p: drawing.points };
  drawing.points = [];
  const n = send(op);
  if (n) room.move(me.connection, n, op);
}

ui.canvas.addEventListener("pointerdown", (/** @type {PointerEvent} */ e) => {
  if (e.button !== 0 && e.pointerType === "mouse") return;
  e.preventDefault();
  ui.canvas.setPointerCapture(e.pointerId);
  const op = { t: "down", k: ++strokeNumber, c: ui.color.value, w: Number(ui.brush.value), e: erasing, p: point(e) };
  const n = send(op);
  if (!n) return;
  room.down(me.connection, n, op);
  drawing = { k: op.k, points: [], timer: setInterval(flush, FLUSH_MS) };
});

ui.canvas.addEventListener("pointermove", (/** @type {PointerEvent} */ e) => {
  sendCursor(e);
  if (!drawing) return;
  const events = typeof e.getCoalescedEvents === "function" ? e.getCoalescedEvents() : [];
  for (const ev of events.length ? events : [e]) drawing.points.push(...point(ev));
  if (drawing.points.length >= 200) flush();
});

for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
  ui.canvas.addEventListener(type, () => {
    if (!drawing) return;
    flush();
    clearInterval(drawing.timer);
    send({ t: "up", k: drawing.k });
    room.up(me.connection, { k: drawing.k });
    drawing = undefined;
  });
}

let cursorAt = 0;
function sendCursor(/** @type {PointerEvent} */ e) {
  if (e.timeStamp - cursorAt < CURSOR_MS) return;
  cursorAt = e.timeStamp;
  const [x, y] = point(e);
  if (x >= 0 && y >= 0 && x <= SIZE && y <= SIZE) send({ t: "cursor", x, y });
}

/** @type {Map<string, HTMLElement>} */
const cursors = new Map();
function showCursor(/** @type {any} */ message) {
  let dot = cursors.get(message.m);
  if (!dot) {
    dot = document.createElement("div");
    dot.className = "cursor";
    dot.append(document.createElement("span"));
    ui.cursors.append(dot);
    cursors.set(message.m, dot);
  }
  const member = membersByConnection.get(message.m);
  dot.style.background = member?.color ?? "#888";
  /** @type {HTMLElement} */ (dot.firstChild).textContent = member?.username ?? "";
  dot.style.left = `${(message.x / SIZE) * 100}%`;
  dot.style.top = `${(message.y / SIZE) * 100}%`;
}

// -- members ---------------------------------------------------------------------------------------

/** @type {Map<string, any>} */
const membersByConnection = new Map();
function showMembers(/** @type {any[]} */ members) {
  membersByConnection.clear();
  const items = members.map((member) => {
    for (const connection of member.connections) membersByConnection.set(connection, member);
    const li = document.createElement("li");
    li.dataset.user = String(member.user);
    const dot = document.createElement("span");
    dot.className = "dot";
    dot.style.background = member.color;
    const name = document.createElement("span");
    name.textContent = member.username + (member.user === me.user ? " (you)" : "");
    li.append(dot, name);
    if (isOwner && member.user !== me.user) {
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "button remove";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", `Remove ${member.username}`);
      remove.addEventListener("click", () => manage({ action: "remove", user: String(member.user) }));
      li.append(remove);
    }
    return li;
  });
  ui.members.replaceChildren(...items);
  for (const [connection, dot] of cursors) {
    if (!membersByConnection.has(connection)) {
      dot.remove();
      cursors.delete(connection);
    }
  }
}

async function manage(/** @type {Record<string, string>} */ fields) {
  const response = await fetch(`/rooms/${slug}/manage`, {
    method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": csrf },
    body: new URLSearchParams(fields),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    ui.error.textContent = body.detail ?? `${response.status}`;
    ui.error.hidden = false;
  }
  return response.ok;
}

// -- parameters and results ------------------------------------------------------------------------

function showParams(/** @type {any} */ params) {
  shownParams = { ...shownParams, ...params };
  const set = (/** @type {any} */ input, /** @type {any} */ value) => {
    if (value !== undefined && document.activeElement !== input) input.value = String(value);
  };
  set(ui.prompt, params.prompt);
  set(ui.strength, params.strength);
  set(ui.steps, params.num_inference_steps);
  set(ui.seed, params.seed);
  set(ui.size, params.image_size);
  $("strength-value").textContent = ui.strength.value;
  $("steps-value").textContent = ui.steps.value;
}

let paramTimer;
function paramChanged() {
  $("strength-value").textContent = ui.strength.value;
  $("steps-value").textContent = ui.steps.value;
  clearTimeout(paramTimer);
  paramTimer = setTimeout(() => send({
    t: "params", prompt: ui.prompt.value, strength: Number(ui.strength.value),
    num_inference_steps: Number(ui.steps.value), seed: Number(ui.seed.value), image_size: Number(ui.size.value),
  }), PARAM_DEBOUNCE_MS);
}
for (const input of [ui.prompt, ui.strength, ui.steps, ui.seed, ui.size]) input.addEventListener("input", paramChanged);

let shownCanvas; // the last canvas the driver sent: the sketch a kept result was made from
let shownParams = {};

async function showResult(/** @type {any} */ result) {
  const image = result.images?.[0];
  if (!image?.content) return;
  const blob = new Blob([image.content], { type: image.content_type });
  latest = { result: blob, canvas: shownCanvas, params: { ...shownParams } };
  $("keep").disabled = false;
  const url = URL.createObjectURL(blob);
  ui.result.src = url;
  await ui.result.decode().catch(() => undefined);
  ui.result.hidden = false;
  ui.placeholder.hidden = true;
  ui.result.dataset.requestId = String(result.request_id ?? "");
  if (resultUrl) URL.revokeObjectURL(resultUrl);
  resultUrl = url;
}

// -- tools -----------------------------------------------------------------------------------------

addSwatches($("palette"), (color) => {
  ui.color.value = color;
  setEraser(false);
});
function setEraser(/** @type {boolean} */ on) {
  erasing = on;
  ui.eraser.setAttribute("aria-pressed", String(on));
}
ui.eraser.addEventListener("click", () => setEraser(!erasing));
$("undo").addEventListener("click", () => send({ t: "undo" }));
$("redo").addEventListener("click", () => send({ t: "redo" }));
$("fill").addEventListener("click", () => {
  const n = send({ t: "fill", c: ui.color.value });
  if (n) room.fill(me.connection, n, ui.color.value);
});
$("clear").addEventListener("click", () => {
  const n = send({ t: "clear" });
  if (n) room.fill(me.connection, n, "#ffffff");
});
$("copy-link").addEventListener("click", () => navigator.clipboard?.writeText($("room-link").value));
document.addEventListener("keydown", (e) => {
  const typing = e.target instanceof HTMLElement && e.target.closest("input, textarea, select");
  if (typing || !(e.ctrlKey || e.metaKey) || e.key.toLowerCase() !== "z") return;
  send({ t: e.shiftKey ? "redo" : "undo" });
  e.preventDefault();
});

$("keep").addEventListener("click", async () => {
  if (!latest) return;
  const form = new FormData();
  form.append("result", latest.result, latest.result.type === "image/png" ? "result.png" : "result.jpg");
  if (latest.canvas) form.append("sketch", new Blob([latest.canvas], { type: "image/png" }), "sketch.png");
  const p = latest.params;
  const fields = { app: studio.dataset.app, room: slug, prompt: p.prompt ?? "", seed: p.seed ?? "", strength: p.strength ?? "",
    num_inference_steps: p.num_inference_steps ?? "", image_size: p.image_size ?? "" };
  for (const [name, value] of Object.entries(fields)) form.append(name, String(value));
  const response = await fetch("/gallery/keep", { method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": csrf }, body: form });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    ui.error.textContent = body.detail ?? `${response.status}`;
    ui.error.hidden = false;
    return;
  }
  $("kept").replaceChildren("Kept: ", Object.assign(document.createElement("a"), { href: body.url, textContent: "open it" }));
  $("kept").hidden = false;
});

if (isOwner) {
  $("invited-only").addEventListener("change", (/** @type {Event} */ e) =>
    manage({ action: "invited_only", value: /** @type {HTMLInputElement} */ (e.target).checked ? "on" : "off" }));
  $("invite").addEventListener("click", async () => {
    if (await manage({ action: "invite", username: $("invite-name").value })) $("invite-name").value = "";
  });
  $("close-room").addEventListener("click", () => manage({ action: "close" }));
}

connect();
