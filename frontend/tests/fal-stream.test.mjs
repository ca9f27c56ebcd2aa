// The published @fal-ai/client 1.10.1, unchanged, calling our HTTP endpoints: `fal.stream` with
// connectionMode "client" (a tokenProvider and the `url` option: a plain fetch with the token in the
// query), and `fal.stream` / `fal.run` in server mode through our proxy (Authorization: Key and
// x-fal-target-url, as fal's server-side proxies receive them), with a `fetch` given in its config.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { createFalClient } from "@fal-ai/client";

import { RUNNER_APPS, startStack } from "../fal-js-spec/stack.mjs";
import { PNG_64 } from "./helpers.mjs";

const STEPS_APP = "test/steps"; // echo in 3 steps: two previews, then the result
const INPUT = {
  prompt: "starry night",
  image_url: `data:image/png;base64,${Buffer.from(PNG_64).toString("base64")}`,
  image_size: { width: 64, height: 64 },
  seed: 42,
};

let stack;
before(async () => {
  stack = await startStack({ apps: `${RUNNER_APPS},${STEPS_APP}=echo?steps=3&delay_ms=150` });
});
after(async () => {
  await stack?.stop();
});

/** A tokenProvider that asks our POST /tokens/ for exactly the app string the client gives it. */
function tokenProviderFor(asked) {
  return async (app) => {
    asked.push(app);
    const response = await fetch(`${stack.http}/tokens/`, {
      method: "POST",
      headers: { Authorization: `Key ${stack.key}`, "Content-Type": "application/json" },
      body: JSON.stringify({ allowed_apps: [app], token_expiration: 120 }),
    });
    assert.equal(response.status, 200, await response.clone().text());
    return response.json();
  };
}

test("fal.stream in client mode: a token for owner/alias/stream, previews, then done() is the result", async () => {
  const fal = createFalClient({});
  const asked = [];
  const stream = await fal.stream(STEPS_APP, {
    input: INPUT,
    connectionMode: "client",
    tokenProvider: tokenProviderFor(asked),
    url: `${stack.http}/${STEPS_APP}/stream`,
  });
  const events = [];
  for await (const event of stream) events.push(event);
  const result = await stream.done();
  assert.deepEqual(asked, [`${STEPS_APP}/stream`]);
  assert.deepEqual(events.map((event) => [event.partial ?? false, event.step]), [[true, 1], [true, 2], [false, undefined]]);
  assert.equal(result.images[0].width, 64);
  assert.match(stream.requestId, /^[0-9a-f]{32}$/);
});

test("fal.stream and fal.run in server mode, through our proxy with the API key", async () => {
  const seen = [];
  const fal = createFalClient({
    credentials: stack.key,
    proxyUrl: { url: `${stack.http}/api/fal/proxy`, when: "always" },
    fetch: (url, init) => {
      seen.push([String(url), new Headers(init?.headers).get("x-fal-target-url")]);
      return fetch(url, init);
    },
  });
  const stream = await fal.stream("local/echo", { input: INPUT });
  const result = await stream.done();
  assert.equal(result.images[0].height, 64);
  const ran = await fal.run("local/echo", { input: { ...INPUT, seed: 7 } });
  assert.equal(ran.data.seed, 7);
  assert.match(ran.requestId, /^[0-9a-f]{32}$/);
  assert.deepEqual(seen, [
    [`${stack.http}/api/fal/proxy`, "https://fal.run/local/echo/stream"],
    [`${stack.http}/api/fal/proxy`, "https://fal.run/local/echo"],
  ]);
});

test("a bad input is an ApiError with our message, from stream and from run", async () => {
  const fal = createFalClient({ credentials: stack.key, proxyUrl: { url: `${stack.http}/api/fal/proxy`, when: "always" } });
  await assert.rejects(fal.run("local/echo", { input: { prompt: "no picture" } }), (error) => {
    assert.equal(error.status, 422);
    assert.match(error.message, /image/);
    return true;
  });
  const stream = await fal.stream("local/echo", { input: { ...INPUT, image_size: "huge" } });
  await assert.rejects(stream.done(), (error) => {
    assert.equal(error.status, 422);
    assert.match(error.message, /image_size/);
    return true;
  });
});
