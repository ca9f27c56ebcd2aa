// The parameters as the chosen app understands them, from what its runner reports in /healthz:
// its vocabulary (local/stylize's style names) as chips that add or remove the word in the prompt,
// the inputs it ignores greyed out and disabled, and the choice to watch its steps where it shows them.

/** @typedef {{id: string, vocabulary?: string[], ignores?: string[], previews?: boolean}} AppInfo */

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
   *   onChange: () => void}} elements
   */
  constructor(apps, { prompt, chips, styles, steps, onChange }) {
    this.apps = new Map(apps.map((app) => [app.id, app]));
    this.prompt = prompt;
    this.chips = chips;
    this.styles = styles;
    this.steps = steps;
    this.onChange = onChange;
  }

  /** Whether `appId` shows its intermediate images (its runner reports `previews`). */
  hasPreviews(/** @type {string} */ appId) {
    return this.apps.get(appId)?.previews === true;
  }

  /** Show the vocabulary and the ignored inputs of `appId`. */
  show(/** @type {string} */ appId) {
    const app = this.apps.get(appId);
    const vocabulary = app?.vocabulary ?? [];
    const ignores = new Set(app?.ignores ?? []);
    this.chips.replaceChildren(...vocabulary.map((word) => this.chip(word)));
    this.styles.hidden = vocabulary.length === 0;
    this.steps.hidden = !this.hasPreviews(appId);
    this.promptEdited();
    for (const field of document.querySelectorAll(".field[data-param]")) {
      const off = ignores.has(/** @type {HTMLElement} */ (field).dataset.param ?? "");
      field.classList.toggle("ignored", off);
      if (off) field.setAttribute("title", `${appId} ignores this`);
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
