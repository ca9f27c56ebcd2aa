/**
 * fal-js's own realtime tests, run against our real server with real WebSockets.
 *
 * Source: fal-ai/fal-js, libs/client/src/realtime.spec.ts at commit
 * 381105e138b85502b528fb8f6c16d909e30e462a (libs/client/package.json there: @fal-ai/client
 * 1.10.1, the version frontend/package.json pins). It tests `createRealtimeClient` of the
 * published package's compiled modules: jest.config.cjs maps the spec's "./config", "./realtime"
 * and "./auth" to node_modules/@fal-ai/client/src/*.js, so `jest.mock("./auth")` mocks the very
 * module realtime.js requires. TypeScript as upstream, through babel-jest.
 *
 * Adapted, as issue 19 allows, only in endpoints, credentials and app ids; no assertion changed.
 * Each change is marked "ADAPTED" below:
 * - MockWebSocket is now a real WebSocket to our gateway (real-socket.ts): it records `url` as the
 *   client built it (wss://fal.run/...) and connects to that address with only wss://fal.run/
 *   rewritten to the gateway; `send`/`close` are still jest.fn spies; `triggerOpen()` waits for
 *   the gateway's real open. The spec's lines that use it are unchanged.
 * - The token literals "mock-token", "custom-token" and "my-custom-token" are real tokens from our
 *   POST /tokens/ (minted in global-setup.mjs with an API key), so that the gateway admits the
 *   sockets; the URL assertions compare with those same values.
 * - The app ids "123-myapp" (also with path "/custom/path") and "456-otherapp" are unchanged: our
 *   real runner serves them (stack.mjs: --apps 123/myapp=echo?paths=realtime+custom/path,
 *   456/otherapp=echo).
 * After each case every socket it made must have been admitted by the gateway (real-socket.ts).
 */
import { decode, encode } from "@msgpack/msgpack";
import { createConfig, type RequiredConfig } from "./config";
import { createRealtimeClient } from "./realtime";
// ADAPTED: the real socket and the real tokens (see the docstring).
import { RealWebSocket, realTokens } from "./real-socket";

jest.mock("./auth", () => {
  const actual = jest.requireActual("./auth");
  return {
    ...actual,
    // ADAPTED (credential): a real token for app myapp from our POST /tokens/ instead of
    // "mock-token" (jest.mock factories may only read globals, hence process.env).
    getTemporaryAuthToken: jest
      .fn()
      .mockResolvedValue(process.env.FAL_SPEC_TOKEN_MYAPP),
  };
});

import { getTemporaryAuthToken } from "./auth";

// ADAPTED (endpoint): MockWebSocket opens a real WebSocket to our gateway (real-socket.ts): the
// same url, readyState, on* handlers, CONNECTING/OPEN, jest.fn send/close and triggerOpen() as
// the spec's mock, with triggerOpen() waiting for the gateway's real open event.
class MockWebSocket extends RealWebSocket {}

describe("createRealtimeClient", () => {
  let config: RequiredConfig;
  const sockets: MockWebSocket[] = [];
  let connectionId = 0;
  const WebSocketMock = jest.fn().mockImplementation((url: string) => {
    const socket = new MockWebSocket(url);
    sockets.push(socket);
    return socket;
  });

  beforeAll(() => {
    // minimal fetch stub to satisfy createConfig
    // eslint-disable-next-line @typescript-eslint/no-empty-function
    global.fetch = jest.fn(() => {}) as any;
  });

  beforeEach(() => {
    connectionId += 1;
    // Don't fake queueMicrotask — the realtime client uses it to defer
    // state machine sends onto a clean call stack, and it needs to execute
    // naturally via await Promise.resolve() in tests.
    jest.useFakeTimers({ doNotFake: ["queueMicrotask"] });
    sockets.length = 0;
    WebSocketMock.mockClear();
    (getTemporaryAuthToken as jest.Mock).mockClear();
    // Suppress console.warn for deprecation warnings during tests
    // eslint-disable-next-line @typescript-eslint/no-empty-function
    jest.spyOn(console, "warn").mockImplementation(() => {});
    // Provide a minimal crypto polyfill for randomUUID used by the client
    (global as any).crypto = {
      randomUUID: () => "00000000-0000-0000-0000-000000000000",
    };
    // @ts-expect-error override global
    global.WebSocket = WebSocketMock;
    config = createConfig({
      credentials: "test-key",
      fetch: global.fetch as any,
    });
  });

  afterEach(() => {
    jest.runOnlyPendingTimers();
    jest.useRealTimers();
    jest.restoreAllMocks();
  });

  it("uses the provided path when opening the websocket", async () => {
    const client = createRealtimeClient({ config });
    const connection = client.connect("123-myapp", {
      connectionKey: `test-conn-${connectionId}`,
      clientOnly: false,
      throttleInterval: 0,
      path: "/custom/path",
      onResult: jest.fn(),
      onError: jest.fn(),
    });

    // trigger connection establishment
    connection.send({ foo: "bar" });
    // let the auth token promise resolve and state machine proceed
    await Promise.resolve();
    await Promise.resolve();
    expect(getTemporaryAuthToken).toHaveBeenCalledTimes(1);

    expect(WebSocketMock).toHaveBeenCalledTimes(1);
    const socket = sockets[0];
    expect(socket.url).toBe(
      // ADAPTED (credential): the real token getTemporaryAuthToken resolves, for "mock-token".
      `wss://fal.run/123/myapp/custom/path?fal_jwt_token=${realTokens.myapp}`,
    );
  });

  it("sends msgpack payloads by default", async () => {
    const client = createRealtimeClient({ config });
    const connection = client.connect("123-myapp", {
      connectionKey: `test-conn-${connectionId}`,
      clientOnly: false,
      throttleInterval: 0,
      onResult: jest.fn(),
      onError: jest.fn(),
    });

    connection.send({ foo: "bar" });
    await Promise.resolve();
    await Promise.resolve();

    expect(WebSocketMock).toHaveBeenCalledTimes(1);
    const socket = sockets[0];
    socket.triggerOpen();
    await Promise.resolve();
    connection.send({ foo: "bar" });
    await Promise.resolve();

    expect(socket.send).toHaveBeenCalledTimes(1);
    const payload = socket.send.mock.calls[0][0];
    expect(payload).toBeInstanceOf(Uint8Array);
    expect(decode(payload)).toEqual({ foo: "bar" });
  });

  it("keeps sending strings as msgpack by default", async () => {
    const client = createRealtimeClient({ config });
    const connection = client.connect("123-myapp", {
      connectionKey: `test-conn-${connectionId}`,
      clientOnly: false,
      throttleInterval: 0,
      onResult: jest.fn(),
      onError: jest.fn(),
    });

    connection.send("hello");
    await Promise.resolve();
    await Promise.resolve();

    expect(WebSocketMock).toHaveBeenCalledTimes(1);
    const socket = sockets[0];
    socket.triggerOpen();
    await Promise.resolve();
    connection.send("hello");
    await Promise.resolve();

    expect(socket.send).toHaveBeenCalledTimes(1);
    const payload = socket.send.mock.calls[0][0];
    expect(payload).toBeInstanceOf(Uint8Array);
    expect(decode(payload)).toBe("hello");
  });

  it("sends and receives plain json when custom encode/decode are provided", async () => {
    const onResult = jest.fn();
    const client = createRealtimeClient({ config });
    const connection = client.connect("123-myapp", {
      connectionKey: `test-conn-${connectionId}`,
      clientOnly: false,
      throttleInterval: 0,
      encodeMessage: (input) =>
        typeof input === "string" ? input : JSON.stringify(input),
      decodeMessage: async (data) => {
        if (typeof data === "string") {
          return JSON.parse(data);
        }
        if (data instanceof ArrayBuffer || data instanceof Uint8Array) {
          return JSON.parse(new TextDecoder().decode(data));
        }
        if (data instanceof Blob) {
          return JSON.parse(
            new TextDecoder().decode(new Uint8Array(await data.arrayBuffer())),
          );
        }
        return data;
      },
      onResult,
      onError: jest.fn(),
    });

    connection.send({ foo: "bar" });
    await Promise.resolve();
    await Promise.resolve();

    expect(WebSocketMock).toHaveBeenCalledTimes(1);
    const socket = sockets[0];
    socket.triggerOpen();
    await Promise.resolve();
    connection.send({ foo: "bar" });
    await Promise.resolve();

    expect(socket.send).toHaveBeenCalledWith('{"foo":"bar"}');

    const result = { status: "ok", request_id: "req-1" };
    socket.onmessage?.({ data: JSON.stringify(result) });
    await Promise.resolve();
    expect(onResult).toHaveBeenCalledWith(result);
  });

  it("falls back to msgpack decode when receiving binary in json mode", async () => {
    const onResult = jest.fn();
    const client = createRealtimeClient({ config });
    const connection = client.connect("123-myapp", {
      connectionKey: `test-conn-${connectionId}`,
      clientOnly: false,
      throttleInterval: 0,
      encodeMessage: (input) =>
        typeof input === "string" ? input : JSON.stringify(input),
      decodeMessage: async (data) => {
        const toUint8Array = async (value: ArrayBuffer | Uint8Array | Blob) => {
          if (value instanceof Uint8Array) return value;
          if (value instanceof Blob)
            return new Uint8Array(await value.arrayBuffer());
          return new Uint8Array(value);
        };
        if (typeof data === "string") {
          return JSON.parse(data);
        }
        if (data instanceof ArrayBuffer || data instanceof Uint8Array) {
          const buffer = await toUint8Array(data);
          try {
            return JSON.parse(new TextDecoder().decode(buffer));
          } catch {
            return decode(buffer);
          }
        }
        if (data instanceof Blob) {
          const buffer = await toUint8Array(data);
          try {
            return JSON.parse(new TextDecoder().decode(buffer));
          } catch {
            return decode(buffer);
          }
        }
        return data;
      },
      onResult,
      onError: jest.fn(),
    });

    connection.send({ foo: "bar" });
    await Promise.resolve();
    await Promise.resolve();

    expect(WebSocketMock).toHaveBeenCalledTimes(1);
    const socket = sockets[0];
    socket.triggerOpen();
    await Promise.resolve();
    connection.send({ foo: "bar" });
    await Promise.resolve();

    const packed = encode({ status: "ok", request_id: "req-2" });
    socket.onmessage?.({ data: packed });
    await Promise.resolve();
    await Promise.resolve();

    expect(onResult).toHaveBeenCalledWith({
      status: "ok",
      request_id: "req-2",
    });
  });

  it("surfaces decode errors to onError", async () => {
    const onError = jest.fn();
    const client = createRealtimeClient({ config });
    const connection = client.connect("123-myapp", {
      connectionKey: `test-conn-${connectionId}`,
      clientOnly: false,
      throttleInterval: 0,
      encodeMessage: (input) =>
        typeof input === "string" ? input : JSON.stringify(input),
      decodeMessage: async (data) => {
        if (typeof data === "string") {
          return JSON.parse(data);
        }
        if (data instanceof ArrayBuffer || data instanceof Uint8Array) {
          return JSON.parse(new TextDecoder().decode(data));
        }
        if (data instanceof Blob) {
          return JSON.parse(
            new TextDecoder().decode(new Uint8Array(await data.arrayBuffer())),
          );
        }
        return data;
      },
      onResult: jest.fn(),
      onError,
    });

    connection.send({ foo: "bar" });
    await Promise.resolve();
    await Promise.resolve();

    expect(WebSocketMock).toHaveBeenCalledTimes(1);
    const socket = sockets[0];
    socket.triggerOpen();
    await Promise.resolve();
    connection.send({ foo: "bar" });
    await Promise.resolve();

    socket.onmessage?.({ data: "not-json" });
    await Promise.resolve();
    await Promise.resolve();

    expect(onError).toHaveBeenCalledTimes(1);
    const errorArg = onError.mock.calls[0][0];
    expect(errorArg.status).toBe(400);
  });

  it("uses custom tokenProvider when provided", async () => {
    // ADAPTED (credential): a real token for app myapp, for "custom-token".
    const customTokenProvider = jest
      .fn()
      .mockResolvedValue(realTokens.myappCustom);
    const client = createRealtimeClient({ config });
    const connection = client.connect("123-myapp", {
      connectionKey: `test-conn-${connectionId}`,
      clientOnly: false,
      throttleInterval: 0,
      tokenProvider: customTokenProvider,
      onResult: jest.fn(),
      onError: jest.fn(),
    });

    connection.send({ foo: "bar" });
    await Promise.resolve();
    await Promise.resolve();

    expect(customTokenProvider).toHaveBeenCalledTimes(1);
    expect(customTokenProvider).toHaveBeenCalledWith("123/myapp/realtime");
    expect(getTemporaryAuthToken).not.toHaveBeenCalled();

    expect(WebSocketMock).toHaveBeenCalledTimes(1);
    const socket = sockets[0];
    expect(socket.url).toBe(
      // ADAPTED (credential): the real token the tokenProvider resolves, for "custom-token".
      `wss://fal.run/123/myapp/realtime?fal_jwt_token=${realTokens.myappCustom}`,
    );
  });

  it("does not call default getTemporaryAuthToken when custom tokenProvider is used", async () => {
    // ADAPTED (credential): a real token for app otherapp, for "my-custom-token".
    const customTokenProvider = jest
      .fn()
      .mockResolvedValue(realTokens.otherapp);
    const client = createRealtimeClient({ config });
    const connection = client.connect("456-otherapp", {
      connectionKey: `test-conn-${connectionId}`,
      clientOnly: false,
      throttleInterval: 0,
      tokenProvider: customTokenProvider,
      onResult: jest.fn(),
      onError: jest.fn(),
    });

    connection.send({ test: "data" });
    await Promise.resolve();
    await Promise.resolve();

    expect(customTokenProvider).toHaveBeenCalledWith("456/otherapp/realtime");
    expect(getTemporaryAuthToken).not.toHaveBeenCalled();
  });

  it("handles tokenProvider errors correctly", async () => {
    const tokenError = new Error("Token fetch failed");
    const customTokenProvider = jest.fn().mockRejectedValue(tokenError);
    const onError = jest.fn();
    const client = createRealtimeClient({ config });
    const connection = client.connect("123-myapp", {
      connectionKey: `test-conn-${connectionId}`,
      clientOnly: false,
      throttleInterval: 0,
      tokenProvider: customTokenProvider,
      onResult: jest.fn(),
      onError,
    });

    connection.send({ foo: "bar" });
    await Promise.resolve();
    await Promise.resolve();

    expect(customTokenProvider).toHaveBeenCalledTimes(1);
    expect(WebSocketMock).not.toHaveBeenCalled();
  });

  it("uses default getTemporaryAuthToken when tokenProvider is not provided", async () => {
    const client = createRealtimeClient({ config });
    const connection = client.connect("123-myapp", {
      connectionKey: `test-conn-${connectionId}`,
      clientOnly: false,
      throttleInterval: 0,
      onResult: jest.fn(),
      onError: jest.fn(),
    });

    connection.send({ foo: "bar" });
    await Promise.resolve();
    await Promise.resolve();

    expect(getTemporaryAuthToken).toHaveBeenCalledTimes(1);
    expect(getTemporaryAuthToken).toHaveBeenCalledWith("123-myapp", config);
  });

  it("does not auto-refresh token when custom tokenProvider is used without tokenExpirationSeconds", async () => {
    // ADAPTED (credential): a real token for app myapp, for "custom-token".
    const customTokenProvider = jest
      .fn()
      .mockResolvedValue(realTokens.myappCustom);
    const client = createRealtimeClient({ config });
    const connection = client.connect("123-myapp", {
      connectionKey: `test-conn-${connectionId}`,
      clientOnly: false,
      throttleInterval: 0,
      tokenProvider: customTokenProvider,
      // No tokenExpirationSeconds specified
      onResult: jest.fn(),
      onError: jest.fn(),
    });

    connection.send({ foo: "bar" });
    await Promise.resolve();
    await Promise.resolve();

    expect(customTokenProvider).toHaveBeenCalledTimes(1);

    const socket = sockets[0];
    socket.triggerOpen();
    await Promise.resolve();

    // Advance time well past the default refresh interval (108s)
    jest.advanceTimersByTime(150000);
    await Promise.resolve();
    await Promise.resolve();

    // Token should NOT be refreshed since no tokenExpirationSeconds was specified
    expect(customTokenProvider).toHaveBeenCalledTimes(1);
  });

  it("schedules token refresh with custom tokenExpirationSeconds", async () => {
    const setTimeoutSpy = jest.spyOn(global, "setTimeout");
    // ADAPTED (credential): a real token for app myapp, for "custom-token".
    const customTokenProvider = jest
      .fn()
      .mockResolvedValue(realTokens.myappCustom);
    const client = createRealtimeClient({ config });
    const connection = client.connect("123-myapp", {
      connectionKey: `test-conn-${connectionId}`,
      clientOnly: false,
      throttleInterval: 0,
      tokenProvider: customTokenProvider,
      tokenExpirationSeconds: 60, // 60 seconds TTL, refresh at 54s (90%)
      onResult: jest.fn(),
      onError: jest.fn(),
    });

    connection.send({ foo: "bar" });
    await Promise.resolve();
    await Promise.resolve();

    expect(customTokenProvider).toHaveBeenCalledTimes(1);

    // Verify setTimeout was called with the correct interval (60 * 0.9 * 1000 = 54000ms)
    const tokenRefreshCall = setTimeoutSpy.mock.calls.find(
      (call) => call[1] === 54000,
    );
    expect(tokenRefreshCall).toBeDefined();

    setTimeoutSpy.mockRestore();
  });
});
