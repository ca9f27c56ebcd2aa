// Tests of frontend/draw/app_controls.js's prompt editing: the style chips add and remove words.
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { promptWords, toggleWord } from "../draw/app_controls.js";

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
