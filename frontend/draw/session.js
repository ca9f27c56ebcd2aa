// This session's results, kept in the page: a strip of the last ones (newest first, bounded), each
// with the sketch and the parameters that made it, to look at again, restore, or keep in the gallery.
// A result joins the strip once the drawing has paused (no newer result for SETTLE_MS), so the strip
// holds moments, not every frame of a stroke.

export const STRIP_SIZE = 12;
export const SETTLE_MS = 800;

/**
 * @typedef {{id: number, result: Blob, sketch: Blob, params: Record<string, string | number>, url: string}} Moment
 */

export class SessionHistory {
  /**
   * @param {HTMLElement} strip where the thumbnails go
   * @param {(moment: Moment) => void} onPick called when a thumbnail is clicked
   */
  constructor(strip, onPick) {
    this.strip = strip;
    this.onPick = onPick;
    /** @type {Moment[]} newest first */
    this.moments = [];
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.timer = undefined;
    /** @type {Omit<Moment, "url"> | undefined} */
    this.current = undefined;
  }

  /** A result was shown: it is the current one at once, and joins the strip unless a newer one
   * comes within SETTLE_MS. */
  offer(/** @type {Omit<Moment, "url">} */ moment) {
    this.current = moment;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.add(moment), SETTLE_MS);
  }

  add(/** @type {Omit<Moment, "url">} */ moment) {
    if (this.moments[0]?.id === moment.id) return;
    const kept = { ...moment, url: URL.createObjectURL(moment.result) };
    this.moments.unshift(kept);
    for (const gone of this.moments.splice(STRIP_SIZE)) URL.revokeObjectURL(gone.url);
    this.render();
  }

  /** The result shown last (in the strip or about to be). */
  latest() {
    if (this.current && this.moments[0]?.id !== this.current.id) this.add(this.current);
    return this.moments[0];
  }

  render() {
    this.strip.replaceChildren(...this.moments.map((moment, index) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "moment";
      button.title = `${moment.params.prompt || "result"} (seed ${moment.params.seed})`;
      button.setAttribute("aria-label", `Result ${index + 1} of this session`);
      const image = document.createElement("img");
      image.src = moment.url;
      image.alt = "";
      button.append(image);
      button.addEventListener("click", () => this.onPick(moment));
      return button;
    }));
  }
}

/**
 * Keep a moment in the gallery; resolves to the creation's page, or throws with the server's reason.
 * @param {Moment} moment
 * @param {string} csrf
 */
export async function keep(moment, csrf) {
  const form = new FormData();
  form.append("result", moment.result, moment.result.type === "image/png" ? "result.png" : "result.jpg");
  form.append("sketch", moment.sketch, "sketch.jpg");
  for (const [name, value] of Object.entries(moment.params)) form.append(name, String(value));
  const response = await fetch("/gallery/keep", {
    method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": csrf }, body: form,
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail ?? `the server answered ${response.status}`);
  return /** @type {string} */ (body.url);
}

export const MAX_FRAMES = 90; // the server takes at most this many pictures in one timelapse

/** The results shown while recording, in order (at most MAX_FRAMES: then it stops by itself). */
export class Recorder {
  constructor() {
    /** @type {Blob[] | undefined} */
    this.frames = undefined;
  }

  get recording() {
    return this.frames !== undefined;
  }

  start() {
    this.frames = [];
  }

  /** @returns {boolean} whether it is full now */
  add(/** @type {Blob} */ result) {
    if (!this.frames) return false;
    if (this.frames.length < MAX_FRAMES) this.frames.push(result);
    return this.frames.length >= MAX_FRAMES;
  }

  stop() {
    const frames = this.frames ?? [];
    this.frames = undefined;
    return frames;
  }
}

/**
 * Keep recorded results as one timelapse (an animated WebP made on the server); resolves to its page.
 * @param {Blob[]} frames
 * @param {Record<string, string | number>} params
 * @param {string} csrf
 */
export async function keepTimelapse(frames, params, csrf) {
  const form = new FormData();
  frames.forEach((frame, i) => form.append("frame", frame, `frame-${i}.${frame.type === "image/png" ? "png" : "jpg"}`));
  form.append("frame_ms", "250");
  for (const [name, value] of Object.entries(params)) form.append(name, String(value));
  const response = await fetch("/gallery/timelapse", {
    method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": csrf }, body: form,
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail ?? `the server answered ${response.status}`);
  return /** @type {string} */ (body.url);
}
