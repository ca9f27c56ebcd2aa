// Tests of frontend/draw/app_controls.js: the style chips add and remove words; the mode (lines or
// picture) is offered and sent only where the app has a ControlNet.
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { AppControls, promptWords, toggleWord } from "../draw/app_controls.js";

describe("promptWords", () => {
  it("finds words whatever the case and punctuation", () => {
    assert.deepEqual([...promptWords("Starry night, over the HARBOUR!")], ["starry", "night", "over", "the", "harbour"]);
    assert.equal(promptWords("").size, 0);
  });
});

describe("toggleWord", () => {
  it("adds a word the prompt lacks at the end", () => {
    assert.equal(toggleWord("a harbour at dusk", "neon"), "a harbour at dusk, neon");
    assert.equal(toggleWord("  ", "neon"), "neon");
    assert.equal(toggleWord("a cat,", "fire"), "a cat, fire");
  });

  it("takes out every whole-word use and the separator it leaves", () => {
    assert.equal(toggleWord("a cat, neon", "neon"), "a cat");
    assert.equal(toggleWord("Neon cat in neon light", "neon"), "cat in light");
    assert.equal(toggleWord("fire, ice, frost", "ice"), "fire, frost");
    assert.equal(toggleWord("neon", "neon"), "");
  });

  it("leaves words that only contain it alone", () => {
    assert.equal(toggleWord("neonlight", "neon"), "neonlight, neon");
    assert.equal(toggleWord("frosty frost", "frost"), "frosty");
  });

  it("treats the word literally, not as a pattern", () => {
    assert.equal(toggleWord("a b", "a.b"), "a b, a.b");
  });
});

describe("AppControls modes", () => {
  const apps = [
    { id: "x/lines", conditioning: ["image", "controlnet"] },
    { id: "x/picture", conditioning: ["image"] },
    { id: "x/unreported" },
  ];

  it("knows which apps can follow the lines", () => {
    const controls = new AppControls(apps, /** @type {any} */ ({ mode: { value: "lines" } }));
    assert.deepEqual(apps.map((app) => controls.hasLines(app.id)), [true, false, false]);
    assert.equal(controls.hasLines("x/absent"), false);
  });

  it("sends a scale of 0 only when an app with lines is asked to follow the picture", () => {
    const mode = { value: "lines" };
    const controls = new AppControls(apps, /** @type {any} */ ({ mode }));
    assert.deepEqual(controls.modeInputs("x/lines"), {});
    mode.value = "image";
    assert.deepEqual(controls.modeInputs("x/lines"), { controlnet_conditioning_scale: 0 });
    assert.deepEqual(controls.modeInputs("x/picture"), {}); // it has no ControlNet to turn off
    assert.deepEqual(controls.modeInputs("x/unreported"), {});
  });
});
