// Tests of frontend/realtime.js: unit tests (URLs, throttle, decoding, the connection state machine with a fake
// socket and mocked timers), then against the real Python runner and small `ws` servers.
import assert from "node:assert/strict";
import { after, afterEach, before, beforeEach, describe, it, mock } from "node:test";

import { decode, encode } from "@msgpack/msgpack";
import { WebSocket, WebSocketServer } from "ws";

import {
  buildRealtimeUrl,
  connect,
  decodeRealtimeMessage,
  encodeRealtimeMessage,
  ensureEndpointIdFormat,
  resolveEndpointPath,
  throttle,
} from "../realtime.js";
import { FakeWebSocket, closedPort, echoInput, sleep, startRunner, waitFor } from "./helpers.mjs";

const realWebSocket = globalThis.WebSocket;

/** Callbacks that record what they get. */
function recorder() {
  const rec = { results: [], errors: [], statuses: [] };
  rec.options = {
    onResult: (result) => rec.results.push(result),
    onError: (error) => rec.errors.push(error),
    onStatus: (status) => rec.statuses.push(status),
  };
  return rec;
}

// -- pure units ----------------------------------------------------------------------------------

describe("app ids and URLs", () => {
  it("normalizes NUMBER-alias and keeps owner/alias", () => {
    assert.equal(ensureEndpointIdFormat("fal-ai/fast-lcm-diffusion"), "fal-ai/fast-lcm-diffusion");
    assert.equal(ensureEndpointIdFormat("110602490-lcm-sd15-i2i"), "110602490/lcm-sd15-i2i");
    assert.throws(() => ensureEndpointIdFormat("no-owner"), /Invalid app id/);
  });

  it("resolves the path like fal", () => {
    assert.equal(resolveEndpointPath("a/b", undefined, "/realtime"), "/realtime");
    assert.equal(resolveEndpointPath("a/b/realtime", undefined, "/realtime"), undefined);
    assert.equal(resolveEndpointPath("a/b", "//ws", "/realtime"), "/ws");
  });

  it("builds the URL with token, max_buffering and path", () => {
    const base = "ws://example.test:8000/";
    assert.equal(
      buildRealtimeUrl("local/echo", { baseUrl: base, token: "t.o.k", maxBuffering: 3 }),
      "ws://example.test:8000/local/echo/realtime?fal_jwt_token=t.o.k&max_buffering=3",
    );
    assert.equal(
      buildRealtimeUrl("110602490-lcm-sd15-i2i", { baseUrl: base }),
      "ws://example.test:8000/110602490/lcm-sd15-i2i/realtime",
    );
    assert.equal(buildRealtimeUrl("fal-ai/x/realtime", { baseUrl: base, token: "t" }), "ws://example.test:8000/fal-ai/x/realtime?fal_jwt_token=t");
    assert.equal(buildRealtimeUrl("fal-ai/x", { baseUrl: base, path: "stream" }), "ws://example.test:8000/fal-ai/x/stream");
    assert.equal(buildRealtimeUrl("fal-ai/x", { baseUrl: "https://h.test" }), "wss://h.test/fal-ai/x/realtime");
    assert.equal(buildRealtimeUrl("fal-ai/x", { baseUrl: base, previews: true }), "ws://example.test:8000/fal-ai/x/realtime?previews=1");
    assert.equal(buildRealtimeUrl("fal-ai/x", { baseUrl: base, previews: false }), "ws://example.test:8000/fal-ai/x/realtime");
  });

  it("validates maxBuffering (1..60) in connect and in the URL", () => {
    for (const bad of [0, 61, -1, Number.NaN]) {
      assert.throws(() => connect("local/echo", { baseUrl: "ws://h", maxBuffering: bad }), /maxBuffering/);
      assert.throws(() => buildRealtimeUrl("local/echo", { baseUrl: "ws://h", maxBuffering: bad }), /maxBuffering/);
    }
    assert.match(buildRealtimeUrl("local/echo", { baseUrl: "ws://h", maxBuffering: 60 }), /max_buffering=60$/);
    connect("local/echo", { baseUrl: "ws://h", maxBuffering: 1 }).close();
  });

  it("derives baseUrl from location, and requires it without one", () => {
    assert.throws(() => connect("local/echo", {}), /baseUrl/);
    globalThis.location = { protocol: "https:", host: "site.test:8443" };
    try {
      assert.equal(buildRealtimeUrl("local/echo", {}), "wss://site.test:8443/local/echo/realtime");
      globalThis.location = { protocol: "http:", host: "localhost:8000" };
      assert.equal(buildRealtimeUrl("local/echo", {}), "ws://localhost:8000/local/echo/realtime");
    } finally {
      delete globalThis.location;
    }
  });
});

describe("throttle", () => {
  beforeEach(() => mock.timers.enable({ apis: ["setTimeout", "Date"] }));
  afterEach(() => mock.timers.reset());

  it("runs the leading call at once and the latest call on the trailing edge", () => {
    const calls = [];
    const fn = throttle((value) => calls.push(value), 128);
    fn("a");
    assert.deepEqual(calls, ["a"]);
    mock.timers.tick(10);
    fn("b");
    mock.timers.tick(10);
    fn("c");
    assert.deepEqual(calls, ["a"]);
    mock.timers.tick(107);
    assert.deepEqual(calls, ["a"]);
    mock.timers.tick(1); // 128 ms after "a"
    assert.deepEqual(calls, ["a", "c"]);
    mock.timers.tick(500);
    fn("d"); // quiet for longer than the interval: leading again
    assert.deepEqual(calls, ["a", "c", "d"]);
    mock.timers.tick(50);
    fn("e");
    mock.timers.tick(78);
    assert.deepEqual(calls, ["a", "c", "d", "e"]);
  });

  it("cancel drops the trailing call", () => {
    const calls = [];
    const fn = throttle((value) => calls.push(value), 100);
    fn(1);
    fn(2);
    fn.cancel();
    mock.timers.tick(1000);
    assert.deepEqual(calls, [1]);
  });
});

describe("message encoding", () => {
  it("decodes JSON text and msgpack binary", () => {
    assert.deepEqual(decodeRealtimeMessage('{"type":"x-fal-message"}'), { type: "x-fal-message" });
    const bytes = encode({ seed: 1, images: [{ content: new Uint8Array([1, 2]) }] });
    const fromView = decodeRealtimeMessage(bytes);
    assert.equal(fromView.seed, 1);
    assert.deepEqual([...fromView.images[0].content], [1, 2]);
    const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    assert.equal(decodeRealtimeMessage(buffer).seed, 1);
  });

  it("encodes objects as msgpack and passes bytes through", () => {
    const raw = new Uint8Array([9]);
    assert.equal(encodeRealtimeMessage(raw), raw);
    assert.deepEqual(decode(encodeRealtimeMessage({ prompt: "p", n: 2 })), { prompt: "p", n: 2 });
  });
});

// -- the connection, with a fake socket ------------------------------------------------------------

describe("connection state machine (fake socket)", () => {
  const base = { baseUrl: "ws://fake.test", throttleInterval: 0 };
  beforeEach(() => {
    FakeWebSocket.reset();
    globalThis.WebSocket = /** @type {any} */ (FakeWebSocket);
    mock.timers.enable({ apis: ["setTimeout", "Date"] });
  });
  afterEach(() => {
    mock.timers.reset();
    globalThis.WebSocket = realWebSocket;
  });

  it("connects lazily, sends only the last input queued before open, as msgpack", () => {
    const rec = recorder();
    const conn = connect("local/echo", { ...base, ...rec.options });
    assert.equal(FakeWebSocket.instances.length, 0);
    assert.deepEqual(rec.statuses, ["idle"]);
    conn.send({ n: 1 });
    conn.send({ n: 2 });
    conn.send({ n: 3 });
    assert.equal(FakeWebSocket.instances.length, 1);
    const ws = FakeWebSocket.last();
    assert.equal(ws.url, "ws://fake.test/local/echo/realtime");
    assert.equal(ws.binaryType, "arraybuffer");
    ws.serverOpen();
    assert.equal(ws.sent.length, 1);
    assert.deepEqual(decode(ws.sent[0]), { n: 3 });
    conn.send({ n: 4 });
    assert.deepEqual(decode(ws.sent[1]), { n: 4 });
    assert.deepEqual(rec.statuses, ["idle", "connecting", "open"]);
    conn.close();
    assert.equal(ws.closedWith, 1000);
    assert.equal(rec.statuses.at(-1), "closed");
  });

  it("skips meta messages, reports x-fal-error (not TIMEOUT), passes results", () => {
    const rec = recorder();
    const conn = connect("local/echo", { ...base, ...rec.options });
    conn.send({ n: 1 });
    const ws = FakeWebSocket.last();
    ws.serverOpen();
    ws.serverMessage(JSON.stringify({ type: "x-fal-message", action: "timings", timing: 0.05 }));
    ws.serverMessage(encode({ images: [], seed: 7, request_id: 1 }));
    ws.serverMessage(JSON.stringify({ images: [], seed: 8 }));
    ws.serverMessage(JSON.stringify({ type: "x-fal-error", error: "VALIDATION_ERROR", reason: "strength: bad", request_id: 5 }));
    ws.serverMessage(JSON.stringify({ type: "x-fal-error", error: "TIMEOUT", reason: "no input for 1 seconds" }));
    assert.deepEqual(rec.results.map((r) => r.seed), [7, 8]);
    assert.equal(rec.errors.length, 1);
    const [error] = rec.errors;
    assert.ok(error instanceof Error);
    assert.equal(error.message, "VALIDATION_ERROR: strength: bad");
    assert.equal(error.code, "VALIDATION_ERROR");
    assert.equal(error.reason, "strength: bad");
    assert.equal(error.requestId, 5);
    assert.equal(typeof error.status, "number");
    ws.serverClose(1000, "idle timeout");
    assert.equal(rec.errors.length, 1, "a TIMEOUT and a 1000 close are not errors");
    assert.equal(rec.statuses.at(-1), "closed");
    conn.send({ n: 2 }); // the next send reconnects at once
    assert.equal(FakeWebSocket.instances.length, 2);
    conn.close();
  });

  it("keeps an input given between TIMEOUT and the close for the next connection", () => {
    const rec = recorder();
    const conn = connect("local/echo", { ...base, ...rec.options });
    conn.send({ n: 1 });
    const ws = FakeWebSocket.last();
    ws.serverOpen();
    ws.serverMessage(encode({ seed: 1 }));
    ws.serverMessage(JSON.stringify({ type: "x-fal-error", error: "TIMEOUT", reason: "idle" }));
    conn.send({ n: 2 });
    assert.equal(ws.sent.length, 1, "not sent on the socket the server is closing");
    ws.serverClose(1000, "idle timeout");
    assert.equal(FakeWebSocket.instances.length, 2);
    FakeWebSocket.last().serverOpen();
    assert.deepEqual(decode(FakeWebSocket.last().sent[0]), { n: 2 });
    assert.deepEqual(rec.errors, []);
    conn.close();
  });

  it("reports abnormal closes once, with the code as status", () => {
    const rec = recorder();
    const conn = connect("local/echo", { ...base, ...rec.options });
    conn.send({ n: 1 });
    let ws = FakeWebSocket.last();
    ws.serverOpen();
    ws.serverMessage(encode({ seed: 1 }));
    ws.serverClose(1011, "boom");
    assert.equal(rec.errors.length, 1);
    assert.equal(rec.errors[0].code, "CONNECTION_CLOSED");
    assert.equal(rec.errors[0].status, 1011);
    assert.equal(rec.errors[0].message, "CONNECTION_CLOSED: boom");
    conn.send({ n: 2 });
    mock.timers.tick(300);
    ws = FakeWebSocket.last();
    ws.serverOpen();
    ws.serverMessage(JSON.stringify({ type: "x-fal-error", error: "RUNNER_UNAVAILABLE", reason: "gone" }));
    ws.serverClose(1011);
    assert.deepEqual(rec.errors.map((e) => e.code), ["CONNECTION_CLOSED", "RUNNER_UNAVAILABLE"]);
    conn.close();
  });

  it("backs off exponentially while the server is down, keeping only the latest input", () => {
    const rec = recorder();
    const conn = connect("local/echo", { ...base, ...rec.options });
    conn.send({ n: 1 });
    const expectedDelays = [250, 500, 1000, 2000, 4000, 8000, 8000];
    for (const delay of expectedDelays) {
      const count = FakeWebSocket.instances.length;
      FakeWebSocket.last().serverClose(1006); // refused: never opened
      mock.timers.tick(delay - 1);
      assert.equal(FakeWebSocket.instances.length, count, `no retry before ${delay} ms`);
      if (delay === 2000) {
        conn.send({ n: 2 });
        conn.send({ n: 3 });
        assert.equal(FakeWebSocket.instances.length, count, "a send does not cut the backoff short");
      }
      mock.timers.tick(1);
      assert.equal(FakeWebSocket.instances.length, count + 1, `retry after ${delay} ms`);
    }
    assert.equal(rec.errors.length, expectedDelays.length);
    assert.ok(rec.errors.every((e) => e.code === "CONNECTION_CLOSED" && e.status === 1006));
    const ws = FakeWebSocket.last();
    ws.serverOpen();
    assert.equal(ws.sent.length, 1);
    assert.deepEqual(decode(ws.sent[0]), { n: 3 });
    ws.serverMessage(encode({ seed: 1 })); // a result resets the backoff
    ws.serverClose(1006);
    mock.timers.tick(249);
    const count = FakeWebSocket.instances.length;
    conn.send({ n: 4 });
    mock.timers.tick(1);
    assert.equal(FakeWebSocket.instances.length, count + 1);
    conn.close();
    mock.timers.tick(60_000);
    assert.equal(FakeWebSocket.instances.length, count + 1, "close() cancels the backoff");
  });

  it("re-sends the unanswered input after an abnormal close", () => {
    const conn = connect("local/echo", { ...base });
    conn.send({ n: 1 });
    FakeWebSocket.last().serverOpen();
    FakeWebSocket.last().serverClose(1001, "going away");
    mock.timers.tick(250);
    const ws = FakeWebSocket.last();
    assert.equal(FakeWebSocket.instances.length, 2);
    ws.serverOpen();
    assert.deepEqual(decode(ws.sent[0]), { n: 1 });
    conn.close();
  });

  it("does not retry a FORBIDDEN refusal", () => {
    const rec = recorder();
    const conn = connect("local/echo", { ...base, ...rec.options });
    conn.send({ n: 1 });
    const ws = FakeWebSocket.last();
    ws.serverOpen();
    ws.serverMessage(JSON.stringify({ type: "x-fal-error", error: "FORBIDDEN", reason: "not your app" }));
    ws.serverClose(4403, "forbidden");
    mock.timers.tick(60_000);
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.deepEqual(rec.errors.map((e) => [e.code, e.status]), [["FORBIDDEN", 403]]);
    assert.equal(rec.statuses.at(-1), "error");
    conn.close();
  });

  it("close() cancels the trailing throttled send and drops the cached connection", () => {
    const rec = recorder();
    const conn = connect("local/echo", { ...base, throttleInterval: 100, connectionKey: "k-close", ...rec.options });
    conn.send({ n: 1 }); // leading: connects
    conn.send({ n: 2 }); // trailing, pending
    const ws = FakeWebSocket.last();
    conn.close();
    assert.equal(ws.closedWith, 1000);
    mock.timers.tick(1000);
    assert.equal(FakeWebSocket.instances.length, 1);
    const again = recorder();
    const conn2 = connect("local/echo", { ...base, connectionKey: "k-close", ...again.options });
    assert.deepEqual(again.statuses, ["idle"], "a fresh connection after close()");
    conn2.close();
  });

  it("reuses one connection per connectionKey with the latest callbacks", () => {
    const first = recorder();
    const second = recorder();
    const a = connect("local/echo", { ...base, connectionKey: "k-shared", ...first.options });
    a.send({ n: 1 });
    const b = connect("local/echo", { ...base, connectionKey: "k-shared", ...second.options });
    b.send({ n: 2 });
    assert.equal(FakeWebSocket.instances.length, 1);
    FakeWebSocket.last().serverOpen();
    FakeWebSocket.last().serverMessage(encode({ seed: 2 }));
    assert.equal(first.results.length, 0);
    assert.equal(second.results.length, 1);
    assert.deepEqual(second.statuses, ["connecting", "open"]);
    b.close();
  });

  it("uses a custom encodeMessage/decodeMessage (text frames)", () => {
    const rec = recorder();
    const conn = connect("local/echo", {
      ...base,
      ...rec.options,
      encodeMessage: (input) => JSON.stringify(input),
      decodeMessage: (data) => ({ wrapped: JSON.parse(data) }),
    });
    conn.send({ n: 1 });
    const ws = FakeWebSocket.last();
    ws.serverOpen();
    assert.equal(ws.sent[0], '{"n":1}');
    ws.serverMessage('{"seed":3}');
    assert.deepEqual(rec.results, [{ wrapped: { seed: 3 } }]);
    conn.close();
  });
});

// -- against the real runner ----------------------------------------------------------------------

describe("against the Python runner", () => {
  /** @type {Awaited<ReturnType<typeof startRunner>>} */
  let runner;
  /** @type {Awaited<ReturnType<typeof startRunner>>} */
  let idleRunner;
  const open = [];
  /** connect() and remember to close */
  const track = (conn) => { open.push(conn); return conn; };

  before(async () => {
    globalThis.WebSocket = /** @type {any} */ (WebSocket);
    [runner, idleRunner] = await Promise.all([startRunner(), startRunner(["--idle-timeout", "0.5"])]);
  });
  after(async () => {
    for (const conn of open) conn.close();
    await Promise.all([runner?.stop(), idleRunner?.stop()]);
    globalThis.WebSocket = realWebSocket;
  });

  it("delivers a result with the echoed request_id", async () => {
    const rec = recorder();
    const conn = track(connect("local/echo", { baseUrl: runner.baseUrl, tokenProvider: async () => "any", ...rec.options }));
    conn.send(echoInput(41));
    await waitFor(() => rec.results.length === 1, { what: "a result" });
    const [result] = rec.results;
    assert.equal(result.request_id, 41);
    assert.ok(result.images[0].content instanceof Uint8Array);
    assert.equal(result.images[0].width, 64);
    assert.equal(typeof result.timings.inference, "number");
    assert.deepEqual(rec.errors, []);
    conn.close();
  });

  it("reports a VALIDATION_ERROR and keeps the connection", async () => {
    const rec = recorder();
    const conn = track(connect("local/echo", { baseUrl: runner.baseUrl, throttleInterval: 0, ...rec.options }));
    conn.send(echoInput(1, { strength: 5 }));
    await waitFor(() => rec.errors.length === 1, { what: "an error" });
    const [error] = rec.errors;
    assert.match(error.message, /^VALIDATION_ERROR: .*strength/);
    assert.equal(error.code, "VALIDATION_ERROR");
    assert.equal(error.requestId, 1);
    conn.send(echoInput(2));
    await waitFor(() => rec.results.length === 1, { what: "a result after the error" });
    assert.equal(rec.results[0].request_id, 2);
    assert.deepEqual(rec.statuses, ["idle", "connecting", "open"], "one connection, never closed");
    conn.close();
  });

  it("sends only the last of the inputs given before the socket opened", async () => {
    const rec = recorder();
    const conn = track(connect("local/echo", { baseUrl: runner.baseUrl, throttleInterval: 0, ...rec.options }));
    for (let id = 1; id <= 5; id += 1) conn.send(echoInput(id));
    await waitFor(() => rec.results.length >= 1, { what: "a result" });
    await sleep(400);
    assert.deepEqual(rec.results.map((r) => r.request_id), [5]);
    conn.close();
  });

  it("shares one socket between connect calls with the same connectionKey", async () => {
    const first = recorder();
    const second = recorder();
    const key = "shared-runner-key";
    const a = track(connect("local/echo", { baseUrl: runner.baseUrl, throttleInterval: 0, connectionKey: key, ...first.options }));
    a.send(echoInput(1));
    await waitFor(() => first.results.length === 1, { what: "the first result" });
    const b = track(connect("local/echo", { baseUrl: runner.baseUrl, throttleInterval: 0, connectionKey: key, ...second.options }));
    b.send(echoInput(2));
    await waitFor(() => second.results.length === 1, { what: "the second result" });
    assert.equal(first.results.length, 1, "callbacks moved to the latest connect call");
    const health = await waitFor(async () => {
      const h = await runner.healthz();
      return h.connections === 1 ? h : null;
    }, { what: "one connection in /healthz" });
    assert.equal(health.connections, 1);
    b.close();
    await waitFor(async () => (await runner.healthz()).connections === 0, { what: "no connections after close" });
  });

  it("reconnects on the next send after the server closed an idle session", async () => {
    const rec = recorder();
    const conn = track(connect("local/echo", { baseUrl: idleRunner.baseUrl, throttleInterval: 0, ...rec.options }));
    conn.send(echoInput(1));
    await waitFor(() => rec.results.length === 1, { what: "the first result" });
    await waitFor(() => rec.statuses.at(-1) === "closed", { what: "the idle close" });
    conn.send(echoInput(2));
    await waitFor(() => rec.results.length === 2, { what: "a result after reconnecting" });
    assert.equal(rec.results[1].request_id, 2);
    assert.deepEqual(rec.errors, [], "TIMEOUT is not reported");
    assert.deepEqual(rec.statuses.slice(0, 6), ["idle", "connecting", "open", "closed", "connecting", "open"]);
    conn.close();
  });

  it("backs off (no tight loop) when nothing listens, and close() stops it", async () => {
    const port = await closedPort();
    const rec = recorder();
    const conn = track(connect("local/echo", { baseUrl: `ws://127.0.0.1:${port}`, ...rec.options }));
    conn.send(echoInput(1));
    await sleep(1500);
    const attempts = rec.statuses.filter((s) => s === "connecting").length;
    assert.ok(attempts >= 2 && attempts <= 5, `attempts in 1.5 s: ${attempts}`);
    assert.ok(rec.errors.length >= 1 && rec.errors.length <= 5, `errors: ${rec.errors.length}`);
    assert.ok(rec.errors.every((e) => e.code === "CONNECTION_CLOSED" && e.status === 1006));
    conn.close();
    const afterClose = rec.statuses.length;
    await sleep(1500);
    assert.equal(rec.statuses.length, afterClose, "no attempts after close()");
  });

  it("refreshes the token at 90% of tokenExpirationSeconds, keeping the socket open", async () => {
    const rec = recorder();
    const calls = [];
    const conn = track(connect("local/echo", {
      baseUrl: runner.baseUrl,
      tokenExpirationSeconds: 1,
      tokenProvider: async (app) => { calls.push({ app, at: Date.now() }); return `token-${calls.length}`; },
      ...rec.options,
    }));
    conn.send(echoInput(1));
    await waitFor(() => rec.results.length === 1, { what: "a result" });
    await waitFor(() => calls.length >= 2, { timeoutMs: 5000, what: "a token refresh" });
    const gap = calls[1].at - calls[0].at;
    assert.ok(gap >= 600 && gap <= 3000, `refresh after ${gap} ms`);
    assert.equal(calls[0].app, "local/echo/realtime");
    assert.ok(!rec.statuses.includes("closed"), "the open socket stays open");
    conn.close();
  });
});

// -- against small ws servers that refuse ----------------------------------------------------------

describe("token refusals (ws test server)", () => {
  /** @type {WebSocketServer} */
  let server;
  let baseUrl;
  let mode = "refuse-first";
  const urls = [];

  before(async () => {
    globalThis.WebSocket = /** @type {any} */ (WebSocket);
    server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
    await new Promise((done) => server.once("listening", done));
    baseUrl = `ws://127.0.0.1:${server.address().port}`;
    server.on("connection", (socket, request) => {
      urls.push(request.url);
      const token = new URL(request.url, "ws://x").searchParams.get("fal_jwt_token");
      if (mode === "forbid" || (mode === "refuse-first" && urls.length === 1)) {
        const [error, code] = mode === "forbid" ? ["FORBIDDEN", 4403] : ["UNAUTHORIZED", 4401];
        socket.send(JSON.stringify({ type: "x-fal-error", error, reason: "token expired" }));
        socket.close(code, error.toLowerCase());
        return;
      }
      socket.on("message", (data) => {
        const input = decode(data);
        socket.send(encode({ images: [], seed: 1, token, request_id: input.request_id }));
      });
    });
  });
  beforeEach(() => { urls.length = 0; });
  after(async () => {
    for (const client of server.clients) client.terminate();
    await new Promise((done) => server.close(done));
    globalThis.WebSocket = realWebSocket;
  });

  it("fetches a fresh token after UNAUTHORIZED and delivers the input", async () => {
    mode = "refuse-first";
    const rec = recorder();
    let calls = 0;
    const conn = connect("fal-ai/fast-lcm-diffusion", {
      baseUrl,
      tokenProvider: async () => `token-${++calls}`,
      ...rec.options,
    });
    conn.send({ prompt: "p", request_id: 7 });
    await waitFor(() => rec.results.length === 1, { what: "a result with the fresh token" });
    assert.equal(calls, 2);
    assert.equal(rec.results[0].token, "token-2");
    assert.equal(rec.results[0].request_id, 7);
    assert.deepEqual(rec.errors.map((e) => e.code), ["UNAUTHORIZED"], "reported once, not again for the 4401 close");
    assert.equal(urls.length, 2);
    assert.match(urls[0], /^\/fal-ai\/fast-lcm-diffusion\/realtime\?fal_jwt_token=token-1$/);
    conn.close();
  });

  it("reports FORBIDDEN once and does not retry in a loop", async () => {
    mode = "forbid";
    const rec = recorder();
    const conn = connect("fal-ai/fast-lcm-diffusion", { baseUrl, tokenProvider: async () => "t", ...rec.options });
    conn.send({ prompt: "p" });
    await waitFor(() => rec.errors.length >= 1, { what: "the FORBIDDEN error" });
    await sleep(1000);
    assert.equal(urls.length, 1);
    assert.deepEqual(rec.errors.map((e) => e.code), ["FORBIDDEN"]);
    assert.equal(rec.statuses.at(-1), "error");
    conn.close();
  });
});
