// The colour swatches of the drawing page and of a room's page.

export const PALETTE = ["#111111", "#1e2a78", "#2f80ed", "#27ae60", "#f2c94c", "#f2994a", "#eb5757", "#ffffff"];

/**
 * Fill `container` with a button per colour; `onPick` gets the colour clicked.
 * @param {HTMLElement} container
 * @param {(color: string) => void} onPick
 */
export function addSwatches(container, onPick) {
  for (const color of PALETTE) {
    const swatch = document.createElement("button");
    swatch.type = "button";
    swatch.className = "swatch";
    swatch.style.background = color;
    swatch.title = color;
    swatch.setAttribute("aria-label", `colour ${color}`);
    swatch.addEventListener("click", () => onPick(color));
    container.append(swatch);
  }
}
