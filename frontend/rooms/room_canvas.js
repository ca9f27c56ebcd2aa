// The room's canvas in the page: the last canvas the room's driver sent (the truth), with the strokes
// drawn since on top, the member's own at once and the others' as they come. When a newer canvas
// arrives, it replaces the picture, and only the strokes it does not hold yet are drawn again.

export const SIZE = 512;

export class RoomCanvas {
  /** @param {HTMLCanvasElement} canvas */
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d", { willReadFrequently: true }));
    this.background = "#ffffff";
    /** @type {{m: string, n: number, segment?: {color: string, width: number, erase: boolean, points: number[]}, fill?: string}[]} */
    this.live = []; // drawn since the last canvas from the driver, in the order they were drawn here
    /** @type {Map<string, {color: string, width: number, erase: boolean, last: number[]}>} open strokes by member:stroke */
    this.strokes = new Map();
    this.ctx.fillStyle = this.background;
    this.ctx.fillRect(0, 0, SIZE, SIZE);
  }

  /** A stroke starts (``points``: its first points, flat x, y, ...). */
  down(/** @type {string} */ member, /** @type {number} */ n, op) {
    const stroke = { color: op.c, width: op.w, erase: Boolean(op.e), last: op.p.slice(0, 2) };
    this.strokes.set(`${member}:${op.k}`, stroke);
    this.#segment(member, n, stroke, op.p);
  }

  move(/** @type {string} */ member, /** @type {number} */ n, op) {
    const stroke = this.strokes.get(`${member}:${op.k}`);
    if (!stroke) return;
    this.#segment(member, n, stroke, [...stroke.last, ...op.p]);
  }

  up(/** @type {string} */ member, op) {
    this.strokes.delete(`${member}:${op.k}`);
  }

  fill(/** @type {string} */ member, /** @type {number} */ n, /** @type {string} */ color) {
    this.live.push({ m: member, n, fill: color });
    this.#fill(color);
  }

  /**
   * The driver's canvas: it replaces the picture; what it has applied of each member (``acked``,
   * connection -> last op number) is dropped, and the rest is drawn again on top.
   * @param {Uint8Array} png
   * @param {Record<string, number>} acked
   */
  async replace(png, acked, background) {
    const bitmap = await createImageBitmap(new Blob([png], { type: "image/png" }));
    this.live = this.live.filter((entry) => entry.n > (acked[entry.m] ?? 0));
    this.ctx.imageSmoothingEnabled = false;
    this.ctx.drawImage(bitmap, 0, 0, SIZE, SIZE);
    bitmap.close();
    if (background) this.background = background;
    for (const entry of this.live) {
      if (entry.fill) this.#fill(entry.fill);
      else if (entry.segment) this.#draw(entry.segment);
    }
  }

  /** The pixels, for tests: the RGBA bytes' digest as a hex string. */
  async digest() {
    const data = this.ctx.getImageData(0, 0, SIZE, SIZE).data;
    const hash = await crypto.subtle.digest("SHA-256", data);
    return Array.from(new Uint8Array(hash), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  #segment(member, n, stroke, points) {
    const segment = { color: stroke.color, width: stroke.width, erase: stroke.erase, points };
    this.live.push({ m: member, n, segment });
    this.#draw(segment);
    stroke.last = points.slice(-2);
  }

  #fill(color) {
    this.background = color;
    this.ctx.fillStyle = color;
    this.ctx.fillRect(0, 0, SIZE, SIZE);
  }

  #draw({ color, width, erase, points }) {
    const ctx = this.ctx;
    ctx.save();
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = width;
    ctx.strokeStyle = erase ? this.background : color;
    ctx.beginPath();
    ctx.moveTo(points[0], points[1]);
    for (let i = 2; i < points.length; i += 2) ctx.lineTo(points[i], points[i + 1]);
    if (points.length === 2) ctx.lineTo(points[0] + 0.01, points[1]);
    ctx.stroke();
    ctx.restore();
  }
}
