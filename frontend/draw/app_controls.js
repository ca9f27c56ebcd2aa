// The parameters as the chosen app understands them, from what its runner reports in /healthz:
// its vocabulary (local/stylize's style names) as chips that add or remove the word in the prompt,
// the inputs it ignores greyed out and disabled, the choice to watch its steps where it shows them, and
// the choice to follow the drawing's lines (ControlNet) or the picture where the app has a ControlNet.

/** @typedef {{id: string, vocabulary?: string[], ignores?: string[], previews?: boolean, conditioning?: string[]}} AppInfo */

const WORD = /[a-z0-9]+/g;

/** @param {string} text */
export function promptWords(text) {
  return new Set(text.toLowerCase().match(WORD) ?? []);
}

/** The prompt with `word` added at the end, or taken out (with the comma or space around it). */
export function toggleWord(/** @type {string} */ prompt, /** @type {string} */ word) {
  if (!promptWords(prompt).has(word)) return prompt.trim() ? `${prompt.trim().replace(/,$/, "")}, ${word}` : word;
  const escaped = word.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const pattern = new RegExp(`(^|[^a-z0-9])${escaped}(?![a-z0-9])`, "gi");
  return prompt
    .replace(pattern, "$1")
    .replace(/\s*,(\s*,)+/g, ",")
    .replace(/\s{2,}/g, " ")
    .replace(/^[\s,]+|[\s,]+$/g, "");
}

export class AppControls {
  /**
   * @param {AppInfo[]} apps
   * @param {{prompt: HTMLTextAreaElement, chips: HTMLElement, styles: HTMLElement, steps: HTMLElement,
   *   mode: HTMLSelectElement, modeField: HTMLElement, onChange: () => void}} elements
   */
  constructor(apps, { prompt, chips, styles, steps, mode, modeField, onChange }) {
    this.apps = new Map(apps.map((app) => [app.id, app]));
    this.prompt = prompt;
    this.chips = chips;
    this.styles = styles;
    this.steps = steps;
    this.mode = mode;
    this.modeField = modeField;
    this.onChange = onChange;
  }

  /** Whether `appId` can follow the drawing's lines (its runner has a ControlNet for it). */
  hasLines(/** @type {string} */ appId) {
    return this.apps.get(appId)?.conditioning?.includes("controlnet") === true;
  }

  /** The inputs the app's frames carry for the chosen mode: following the picture turns the ControlNet off. */
  modeInputs(/** @type {string} */ appId) {
    return this.hasLines(appId) && this.mode.value === "image" ? { controlnet_conditioning_scale: 0 } : {};
  }

  /** Whether `appId` shows its intermediate images (its runner reports `previews`). */
  hasPreviews(/** @type {string} */ appId) {
    return this.apps.get(appId)?.previews === true;
  }

  /** Show the vocabulary and the ignored inputs of `appId`. */
  show(/** @type {string} */ appId) {
    const app = this.apps.get(appId);
    const vocabulary = app?.vocabulary ?? [];
    const ignores = new Map((app?.ignores ?? []).map((name) => [name, `${appId} ignores this`]));
    const lines = this.hasLines(appId);
    if (lines && this.mode.value === "lines") ignores.set("strength", "a picture along the lines starts from noise");
    this.chips.replaceChildren(...vocabulary.map((word) => this.chip(word)));
    this.styles.hidden = vocabulary.length === 0;
    this.steps.hidden = !this.hasPreviews(appId);
    this.modeField.hidden = !lines;
    this.promptEdited();
    for (const field of document.querySelectorAll(".field[data-param]")) {
      const why = ignores.get(/** @type {HTMLElement} */ (field).dataset.param ?? "");
      const off = why !== undefined;
      field.classList.toggle("ignored", off);
      if (off) field.setAttribute("title", why);
      else field.removeAttribute("title");
      for (const mark of field.querySelectorAll(".ignored-mark")) /** @type {HTMLElement} */ (mark).hidden = !off;
      for (const control of field.querySelectorAll("input, textarea, button, select")) {
        /** @type {HTMLInputElement} */ (control).disabled = off;
      }
    }
  }

  /** Mark the chips whose word the prompt holds. */
  promptEdited() {
    const words = promptWords(this.prompt.value);
    for (const chip of this.chips.children) {
      chip.setAttribute("aria-pressed", String(words.has(/** @type {HTMLElement} */ (chip).dataset.word ?? "")));
    }
  }

  /** @param {string} word */
  chip(word) {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "chip";
    chip.textContent = word;
    chip.dataset.word = word;
    chip.addEventListener("click", () => {
      this.prompt.value = toggleWord(this.prompt.value, word);
      this.promptEdited();
      this.onChange();
    });
    return chip;
  }
}
