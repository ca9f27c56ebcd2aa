// The published @fal-ai/client 1.10.1, unchanged, against our runner: its WebSocket address is
// hard-coded to wss://fal.run/, so a WebSocket subclass rewrites that one address (as the README says).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { createFalClient } from "@fal-ai/client";
import { WebSocket as NodeWebSocket } from "ws";

import { echoInput, startRunner } from "./helpers.mjs";

let runner;
before(async () => {
  runner = await startRunner();
  globalThis.WebSocket = class extends NodeWebSocket {
    constructor(url, protocols) {
      super(String(url).replace("wss://fal.run/", `ws://127.0.0.1:${runner.port}/`), protocols);
    }
  };
});
after(async () => {
  delete globalThis.WebSocket;
  await runner?.stop();
});

test("@fal-ai/client's realtime.connect gets results and errors from our server", async () => {
  const fal = createFalClient({});
  const results = [];
  const errors = [];
  const done = new Promise((resolve) => {
    const connection = fal.realtime.connect("local/echo", {
      tokenProvider: async () => "unused-by-the-runner",
      tokenExpirationSeconds: 120,
      throttleInterval: 0,
      onResult: (result) => {
        results.push(result);
        if (results.length === 1) connection.send(echoInput(2, { strength: 7 }));
      },
      onError: (error) => {
        errors.push(error);
        connection.close();
        resolve();
      },
    });
    connection.send(echoInput(1));
  });
  await done;
  assert.equal(results.length, 1);
  assert.equal(results[0].request_id, 1);
  assert.equal(results[0].images[0].width, 64);
  assert.match(errors[0].message, /^VALIDATION_ERROR: strength/);
});
