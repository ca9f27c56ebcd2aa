// The drawing surface: pointer strokes (mouse, pen pressure, touch), eraser, fill, pictures and
// camera frames, undo and redo, and export of the drawing as JPEG bytes at any size.

import { History } from "./history.js";

export class DrawingCanvas {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{onChange: (eventTime: number) => void}} options called whenever the picture changed
   */
  constructor(canvas, { onChange }) {
    this.canvas = canvas;
    this.ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d", { willReadFrequently: true }));
    this.onChange = onChange;
    this.history = new History();
    this.color = "#1e2a78";
    this.size = 10;
    this.erasing = false;
    this.background = "#ffffff";
    /** @type {Map<number, {x: number, y: number}>} last point of each active pointer's stroke */
    this.strokes = new Map();
    this.fill(this.background, { record: false });
    canvas.addEventListener("pointerdown", (e) => this.#down(e));
    canvas.addEventListener("pointermove", (e) => this.#move(e));
    for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
      canvas.addEventListener(type, (e) => this.strokes.delete(/** @type {PointerEvent} */ (e).pointerId));
    }
  }

  #point(/** @type {PointerEvent} */ e) {
    const box = this.canvas.getBoundingClientRect();
    return {
      x: ((e.clientX - box.left) / box.width) * this.canvas.width,
      y: ((e.clientY - box.top) / box.height) * this.canvas.height,
    };
  }

  #width(/** @type {PointerEvent} */ e) {
    // Pens report pressure; mice report 0.5 while pressed, which gives the nominal size.
    const pressure = e.pointerType === "pen" ? e.pressure || 0.5 : 0.5;
    return Math.max(1, this.size * pressure * 2);
  }

  #down(/** @type {PointerEvent} */ e) {
    if (e.button !== 0 && e.pointerType === "mouse") return;
    e.preventDefault();
    this.canvas.setPointerCapture(e.pointerId);
    this.history.record(this.snapshot());
    const p = this.#point(e);
    this.strokes.set(e.pointerId, p);
    this.#segment(p, p, this.#width(e));
    this.onChange(e.timeStamp);
  }

  #move(/** @type {PointerEvent} */ e) {
    const last = this.strokes.get(e.pointerId);
    if (!last) return;
    const events = typeof e.getCoalescedEvents === "function" ? e.getCoalescedEvents() : [];
    let from = last;
    for (const ev of events.length ? events : [e]) {
      const to = this.#point(ev);
      this.#segment(from, to, this.#width(ev));
      from = to;
    }
    this.strokes.set(e.pointerId, from);
    this.onChange(e.timeStamp);
  }

  #segment(from, to, width) {
    const ctx = this.ctx;
    ctx.save();
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = width;
    ctx.strokeStyle = this.erasing ? this.background : this.color;
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x + 0.01, to.y);
    ctx.stroke();
    ctx.restore();
  }

  snapshot() {
    return this.ctx.getImageData(0, 0, this.canvas.width, this.canvas.height);
  }

  #restore(/** @type {ImageData | undefined} */ data) {
    if (!data) return false;
    this.ctx.putImageData(data, 0, 0);
    this.onChange(performance.now());
    return true;
  }

  undo() {
    return this.#restore(this.history.undo(this.snapshot()));
  }

  redo() {
    return this.#restore(this.history.redo(this.snapshot()));
  }

  /** Paint the whole canvas one colour; it becomes the eraser's colour too. */
  fill(color, { record = true } = {}) {
    if (record) this.history.record(this.snapshot());
    this.background = color;
    this.ctx.save();
    this.ctx.fillStyle = color;
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.ctx.restore();
    if (record) this.onChange(performance.now());
  }

  clear() {
    this.fill("#ffffff");
  }

  /**
   * Draw a picture or a video frame over the whole canvas (cover, centred).
   * @param {CanvasImageSource & {width?: number, height?: number, videoWidth?: number, videoHeight?: number}} source
   */
  drawPicture(source, { record = true, eventTime = performance.now() } = {}) {
    const w = source.videoWidth || source.width || 0;
    const h = source.videoHeight || source.height || 0;
    if (!w || !h) return;
    if (record) this.history.record(this.snapshot());
    const scale = Math.max(this.canvas.width / w, this.canvas.height / h);
    const dw = w * scale;
    const dh = h * scale;
    this.ctx.drawImage(source, (this.canvas.width - dw) / 2, (this.canvas.height - dh) / 2, dw, dh);
    this.onChange(eventTime);
  }

  /**
   * The drawing as image bytes at `size` x `size`.
   * @returns {Promise<Uint8Array>}
   */
  async export(size, type = "image/jpeg", quality = 0.85) {
    let source = this.canvas;
    if (size !== this.canvas.width) {
      source = document.createElement("canvas");
      source.width = source.height = size;
      /** @type {CanvasRenderingContext2D} */ (source.getContext("2d")).drawImage(this.canvas, 0, 0, size, size);
    }
    const blob = await new Promise((resolve, reject) =>
      source.toBlob((b) => (b ? resolve(b) : reject(new Error("the canvas could not be encoded"))), type, quality),
    );
    return new Uint8Array(await blob.arrayBuffer());
  }
}
