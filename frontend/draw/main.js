// The drawing page: draw, and the model paints it as you draw.
//
// A frame leaves only when the drawing or a parameter changed, at most once per throttle interval
// (leading and trailing edge), as binary JPEG at the chosen size. The throttle runs before the JPEG
// is encoded, which is the costly part, so realtime.js's own throttle is off here. Nothing leaves
// before the first stroke: the result pane invites to draw until then. Where the app shows its
// steps and the person asks for them, each intermediate image is shown as it comes, marked
// "step S of N", until the input's result replaces it.

import { connect, throttle } from "../realtime.js";
import { DrawingCanvas } from "./canvas.js";
import { AppControls } from "./app_controls.js";
import { addSwatches } from "./palette.js";
import { RollingStats } from "./stats.js";
import { Recorder, SessionHistory, keep, keepTimelapse } from "./session.js";

const THROTTLE_MS = 128;
const $ = (/** @type {string} */ id) => /** @type {any} */ (document.getElementById(id));

const studio = $("studio");
const tokenLifetime = Number(studio.dataset.tokenLifetime) || 120;
const ui = {
  app: $("app-select"), prompt: $("prompt"), strength: $("strength"), steps: $("steps"), seed: $("seed"),
  seedLock: $("seed-lock"), size: $("size"), color: $("color"), brush: $("brush"), eraser: $("eraser"),
  result: $("result"), placeholder: $("result-placeholder"), busy: $("busy"), status: $("status"),
  latency: $("latency"), fps: $("fps"), download: $("download"), error: $("error"), video: $("video"),
  webcam: $("webcam"), showSteps: $("show-steps"), step: $("step"), keep: $("keep"), kept: $("kept"),
  viewing: $("viewing"), record: $("record"), mode: $("mode"),
};
const recorder = new Recorder();
const csrf = /** @type {HTMLInputElement} */ (document.querySelector("#share-form [name=csrfmiddlewaretoken]")).value;

const stats = new RollingStats();
/** @type {Map<number, {changeAt: number, sentAt: number, sketch: Uint8Array, params: Record<string, string | number>}>} frames sent and not answered yet */
const inFlight = new Map();
let nextId = 1;
let lastShownId = 0;
let dirty = false;
let preparing = 0; // frames being encoded, not yet sent
let drawn = false; // whether the person has drawn (or loaded a picture) yet
let lastChangeAt = performance.now();
/** @type {{send: (input: object) => void, close: () => void} | undefined} */
let connection;
/** @type {string | undefined} */
let resultUrl;
/** @type {string | undefined} */
let stepUrl;
/** @type {MediaStream | undefined} */
let camera;

const drawing = new DrawingCanvas($("canvas"), { onChange: drew });
// Read by the browser tests and benchmark: settled() is true once every change has gone out and been answered.
window.realtimePage = { stats, inFlight, drawing, settled: () => !dirty && preparing === 0 && inFlight.size === 0 };
const appControls = new AppControls(JSON.parse($("app-info").textContent), {
  prompt: ui.prompt, chips: $("style-chips"), styles: $("styles"), steps: $("steps-field"), mode: ui.mode,
  modeField: $("mode-field"), onChange: changed,
});

function drew(/** @type {number} */ eventTime) {
  drawn = true;
  changed(eventTime);
}

function changed(eventTime = performance.now()) {
  dirty = true;
  lastChangeAt = eventTime;
  if (drawn) sendFrame();
}

const sendFrame = throttle(async () => {
  if (!dirty || !connection || !ui.app.value) return;
  dirty = false;
  const changeAt = lastChangeAt;
  const size = Number(ui.size.value);
  if (!ui.seedLock.checked) ui.seed.value = String(Math.floor(Math.random() * 2 ** 32));
  preparing += 1;
  const image = await drawing.export(size).finally(() => (preparing -= 1));
  const id = nextId++;
  const params = {
    app: ui.app.value, prompt: ui.prompt.value, strength: Number(ui.strength.value),
    num_inference_steps: Number(ui.steps.value), seed: Number(ui.seed.value), image_size: size,
  };
  inFlight.set(id, { changeAt, sentAt: performance.now(), sketch: image, params });
  connection.send({
    prompt: ui.prompt.value || " ",
    image_bytes: image,
    strength: Number(ui.strength.value),
    num_inference_steps: Number(ui.steps.value),
    seed: Number(ui.seed.value),
    image_size: { width: size, height: size },
    output_format: "jpeg",
    request_id: id,
    ...appControls.modeInputs(ui.app.value),
  });
  ui.busy.hidden = false;
}, THROTTLE_MS);

/** @param {any} image a result's image: bytes (msgpack) or a data URL (JSON) */
async function blobOf(image) {
  return image.content ? new Blob([image.content], { type: image.content_type }) : (await fetch(image.url)).blob();
}

async function showResult(/** @type {any} */ result) {
  if (result.partial) return showStep(result);
  const id = result.request_id;
  const frame = inFlight.get(id);
  for (const key of inFlight.keys()) if (key <= id) inFlight.delete(key); // older ones were displaced
  ui.busy.hidden = inFlight.size === 0;
  if (typeof id !== "number" || id <= lastShownId) return;
  lastShownId = id;
  const image = result.images?.[0];
  if (!image) return;
  const blob = await blobOf(image);
  if (id !== lastShownId) return; // a newer result overtook this one while it was fetched
  const url = URL.createObjectURL(blob);
  ui.result.src = url;
  await ui.result.decode().catch(() => undefined);
  if (id !== lastShownId) return; // ... or while it was decoded
  ui.result.hidden = false;
  ui.placeholder.hidden = true;
  ui.step.hidden = true;
  if (resultUrl) URL.revokeObjectURL(resultUrl);
  resultUrl = url;
  if (stepUrl) URL.revokeObjectURL(stepUrl);
  stepUrl = undefined;
  if (frame) stats.add(performance.now() - frame.changeAt);
  ui.latency.textContent = `${Math.round(stats.percentile(50))} ms`;
  ui.download.href = url;
  ui.download.download = `${slug(ui.prompt.value) || "drawing"}-${result.seed ?? ui.seed.value}.jpg`;
  ui.download.hidden = false;
  ui.error.hidden = true;
  ui.result.dataset.requestId = String(id);
  ui.viewing.hidden = true;
  if (frame) {
    moments.offer({ id, result: blob, sketch: new Blob([frame.sketch], { type: "image/jpeg" }), params: frame.params });
    ui.keep.disabled = false;
    if (recorder.add(blob)) stopRecording();
    if (recorder.recording) ui.record.textContent = `Stop (${recorder.frames?.length})`;
  }
}

// -- this session's results, and keeping them ------------------------------------------------------

/** @type {import("./session.js").Moment | undefined} the strip's moment being looked at */
let viewed;
const moments = new SessionHistory($("history-strip"), (moment) => {
  viewed = moment;
  ui.result.src = moment.url;
  ui.result.hidden = false;
  ui.placeholder.hidden = true;
  ui.viewing.hidden = false;
});

$("live").addEventListener("click", () => {
  viewed = undefined;
  ui.viewing.hidden = true;
  if (resultUrl) ui.result.src = resultUrl;
});

$("restore").addEventListener("click", async () => {
  if (viewed) await restore(viewed.params, viewed.sketch);
  viewed = undefined;
  ui.viewing.hidden = true;
});

/** Bring back a drawing and its parameters (from the strip, or a creation to remix). */
async function restore(/** @type {Record<string, any>} */ params, /** @type {Blob | undefined} */ sketch) {
  if (params.app && [...ui.app.options].some((o) => o.value === params.app && !o.disabled)) ui.app.value = params.app;
  for (const [input, name] of [[ui.prompt, "prompt"], [ui.strength, "strength"], [ui.steps, "num_inference_steps"],
    [ui.seed, "seed"], [ui.size, "image_size"]]) {
    if (params[name] !== undefined && params[name] !== null) input.value = String(params[name]);
  }
  $("strength-value").textContent = ui.strength.value;
  $("steps-value").textContent = ui.steps.value;
  ui.seedLock.checked = true; // the seed that made it
  if (sketch) drawing.drawPicture(await createImageBitmap(sketch));
  drawn = true;
  openConnection();
}

ui.keep.addEventListener("click", async () => {
  const moment = viewed ?? moments.latest();
  if (!moment) return;
  ui.keep.disabled = true;
  try {
    const url = await keep(moment, csrf);
    ui.kept.replaceChildren("Kept: ", Object.assign(document.createElement("a"), { href: url, textContent: "open it" }));
    ui.kept.hidden = false;
  } catch (error) {
    tell(error);
  } finally {
    ui.keep.disabled = false;
  }
});

ui.record.addEventListener("click", () => (recorder.recording ? stopRecording() : startRecording()));

function startRecording() {
  recorder.start();
  ui.record.setAttribute("aria-pressed", "true");
  ui.record.textContent = "Stop (0)";
}

async function stopRecording() {
  const frames = recorder.stop();
  ui.record.setAttribute("aria-pressed", "false");
  ui.record.textContent = "Record";
  if (frames.length < 2) {
    tell(new Error("A timelapse needs at least two results: draw while recording."));
    return;
  }
  const params = moments.latest()?.params ?? { app: ui.app.value, prompt: ui.prompt.value };
  try {
    const url = await keepTimelapse(frames, params, csrf);
    ui.kept.replaceChildren(`Timelapse of ${frames.length} kept: `,
      Object.assign(document.createElement("a"), { href: url, textContent: "open it" }));
    ui.kept.hidden = false;
    ui.kept.dataset.frames = String(frames.length);
  } catch (error) {
    tell(error);
  }
}

async function remixFromUrl() {
  const id = new URLSearchParams(location.search).get("remix");
  if (!id || !/^[A-Za-z0-9_-]+$/.test(id)) return;
  const response = await fetch(`/gallery/${id}/remix`, { credentials: "same-origin" });
  if (!response.ok) {
    tell(new Error("That creation is not there to remix."));
    return;
  }
  const { parameters, sketch } = await response.json();
  const picture = sketch ? await (await fetch(sketch, { credentials: "same-origin" })).blob() : undefined;
  await restore(parameters, picture);
}

/** An intermediate image of an input newer than the result shown; its own result replaces it. */
async function showStep(/** @type {any} */ preview) {
  const id = preview.request_id;
  const image = preview.images?.[0];
  if (typeof id !== "number" || id <= lastShownId || !image) return;
  const blob = await blobOf(image);
  if (id <= lastShownId) return; // its result (or a newer one) is being shown
  const url = URL.createObjectURL(blob);
  ui.result.src = url;
  await ui.result.decode().catch(() => undefined);
  if (stepUrl) URL.revokeObjectURL(stepUrl);
  stepUrl = url;
  if (id <= lastShownId) return; // its result came while it was decoded
  ui.result.hidden = false;
  ui.placeholder.hidden = true;
  ui.step.textContent = `step ${preview.step} of ${preview.steps}`;
  ui.step.hidden = false;
}

/** A problem outside the frame path (a keep, a timelapse): told, and nothing in flight is touched. */
function tell(/** @type {any} */ error) {
  ui.error.textContent = error?.message || String(error);
  ui.error.hidden = false;
}

function showError(/** @type {any} */ error) {
  ui.error.textContent = error?.message || String(error);
  ui.error.hidden = false;
  inFlight.clear();
  ui.busy.hidden = true;
}

function showStatus(/** @type {string} */ state) {
  ui.status.textContent = { open: "connected", connecting: "connecting", idle: "ready", closed: "disconnected", error: "error" }[state] ?? state;
  ui.status.dataset.state = state;
}

async function tokenProvider(/** @type {string} */ app) {
  const response = await fetch(`/api/fal/token?app=${encodeURIComponent(app)}`, { credentials: "same-origin" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${response.status}: ${body.detail ?? "no token"}`);
  return body.token;
}

function openConnection() {
  connection?.close();
  inFlight.clear();
  ui.step.hidden = true;
  const app = ui.app.value;
  appControls.show(app);
  if (!app) {
    showStatus("error");
    showError(new Error("No app is available: no runner is reachable."));
    return;
  }
  const previews = ui.showSteps.checked && appControls.hasPreviews(app);
  connection = connect(app, {
    connectionKey: `draw:${app}:${previews ? "steps" : "results"}`,
    previews,
    throttleInterval: 0,
    maxBuffering: 1,
    tokenProvider,
    tokenExpirationSeconds: tokenLifetime,
    onResult: showResult,
    onError: showError,
    onStatus: showStatus,
  });
  changed();
}

function slug(/** @type {string} */ text) {
  return text.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 40);
}

async function toggleWebcam() {
  if (camera) {
    for (const track of camera.getTracks()) track.stop();
    camera = undefined;
    ui.webcam.setAttribute("aria-pressed", "false");
    return;
  }
  try {
    camera = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
  } catch (error) {
    showError(new Error(`Camera unavailable: ${error instanceof Error ? error.message : error}`));
    return;
  }
  ui.video.srcObject = camera;
  await ui.video.play();
  ui.webcam.setAttribute("aria-pressed", "true");
  const tick = () => {
    if (!camera) return;
    drawing.drawPicture(ui.video, { record: false });
    requestAnimationFrame(tick);
  };
  drawing.history.record(drawing.snapshot());
  tick();
}

// -- controls -------------------------------------------------------------------------------------

const palette = $("palette");
addSwatches(palette, setColor);

function setColor(/** @type {string} */ color) {
  drawing.color = color;
  ui.color.value = color;
  setEraser(false);
  for (const swatch of palette.children) swatch.setAttribute("aria-pressed", String(swatch.title === color));
}

function setEraser(/** @type {boolean} */ on) {
  drawing.erasing = on;
  ui.eraser.setAttribute("aria-pressed", String(on));
}

ui.color.addEventListener("input", () => setColor(ui.color.value));
ui.brush.addEventListener("input", () => (drawing.size = Number(ui.brush.value)));
ui.eraser.addEventListener("click", () => setEraser(!drawing.erasing));
$("undo").addEventListener("click", () => drawing.undo());
$("redo").addEventListener("click", () => drawing.redo());
$("fill").addEventListener("click", () => drawing.fill(ui.color.value));
$("clear").addEventListener("click", () => drawing.clear());
ui.webcam.addEventListener("click", toggleWebcam);
$("upload").addEventListener("change", async (/** @type {Event} */ e) => {
  const file = /** @type {HTMLInputElement} */ (e.target).files?.[0];
  if (!file) return;
  try {
    drawing.drawPicture(await createImageBitmap(file));
  } catch {
    showError(new Error(`${file.name} is not a picture this browser can read`));
  }
});
$("seed-random").addEventListener("click", () => {
  ui.seed.value = String(Math.floor(Math.random() * 2 ** 32));
  changed();
});
for (const [input, output] of [[ui.strength, $("strength-value")], [ui.steps, $("steps-value")]]) {
  input.addEventListener("input", () => {
    output.textContent = input.value;
    changed();
  });
}
for (const input of [ui.seed, ui.seedLock, ui.size]) input.addEventListener("input", () => changed());
ui.prompt.addEventListener("input", () => {
  appControls.promptEdited();
  changed();
});
ui.app.addEventListener("change", openConnection);
ui.mode.addEventListener("change", () => {
  appControls.show(ui.app.value);
  changed();
});
$("share-form").addEventListener("submit", (/** @type {SubmitEvent} */ e) => {
  // The room starts from this drawing and these parameters.
  const form = /** @type {HTMLFormElement} */ (e.target);
  const fields = {
    app: ui.app.value, picture: $("canvas").toDataURL("image/png"), prompt: ui.prompt.value,
    strength: ui.strength.value, num_inference_steps: ui.steps.value, seed: ui.seed.value, image_size: ui.size.value,
  };
  for (const [name, value] of Object.entries(fields)) /** @type {HTMLInputElement} */ (form.elements.namedItem(name)).value = value;
});
ui.showSteps.addEventListener("change", openConnection);

document.addEventListener("keydown", (e) => {
  const typing = e.target instanceof HTMLElement && e.target.closest("input, textarea, select");
  if (typing || !(e.ctrlKey || e.metaKey)) return;
  const key = e.key.toLowerCase();
  if (key === "z" && !e.shiftKey) drawing.undo();
  else if ((key === "z" && e.shiftKey) || key === "y") drawing.redo();
  else return;
  e.preventDefault();
});

setInterval(() => (ui.fps.textContent = stats.fps().toFixed(1)), 500);
setColor(drawing.color);
openConnection();
remixFromUrl();
