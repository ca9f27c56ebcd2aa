// The realtime client: fal's `fal.realtime.connect(app, options)` for this server, as a plain ES module.
//
//   import { connect } from "./realtime.js";
//   const conn = connect("local/echo", { onResult, onError, onStatus, tokenProvider });
//   conn.send({ prompt: "a cat", image_bytes: bytes }); ... conn.close();
//
// Option names and behaviour follow @fal-ai/client (src/realtime.ts); `baseUrl` and `onStatus` are ours.
import { encode, decode } from "@msgpack/msgpack";

const DEFAULT_THROTTLE_INTERVAL = 128;
const BACKOFF_INITIAL_MS = 250;
const BACKOFF_MAX_MS = 8000;
// The wire contract's names and numbers, as realtime_site/protocol.py defines them
// (tests/test_wire_contract.py checks that they agree).
export const CLOSE_CODE = Object.freeze({
  NORMAL: 1000, BAD_REQUEST: 4400, UNAUTHORIZED: 4401, FORBIDDEN: 4403, NOT_FOUND: 4404, UNAVAILABLE: 4503,
});
export const MAX_BUFFERING_RANGE = Object.freeze([1, 60]);
export const ERROR_STATUS = Object.freeze({
  UNAUTHORIZED: 401, FORBIDDEN: 403, PAYLOAD_TOO_LARGE: 413, RATE_LIMITED: 429, QUOTA_EXCEEDED: 429,
  INTERNAL_ERROR: 500, APP_UNAVAILABLE: 503, RUNNER_UNAVAILABLE: 503,
});
/** Refusals that another try will not fix: reported once, the held input is dropped, no retry loop. */
export const FATAL_CLOSE_CODES = new Set([
  CLOSE_CODE.BAD_REQUEST, CLOSE_CODE.FORBIDDEN, CLOSE_CODE.NOT_FOUND, CLOSE_CODE.UNAVAILABLE,
]);
export const FATAL_ERRORS = new Set(["FORBIDDEN", "APP_UNAVAILABLE", "QUOTA_EXCEEDED"]);

/**
 * @typedef {"idle" | "connecting" | "open" | "closed" | "error"} ConnectionStatus
 * @typedef {Error & {code: string, reason: string, status: number, requestId?: unknown, body?: unknown}} RealtimeError
 * @typedef {object} RealtimeOptions
 * @property {(result: any) => void} [onResult]
 * @property {(error: RealtimeError) => void} [onError]
 * @property {(status: ConnectionStatus) => void} [onStatus] ours: connection status for the page
 * @property {string} [baseUrl] ours: ws(s)://host[:port]; default: derived from `location`
 * @property {string} [connectionKey] same key: same socket, callbacks from the latest `connect`
 * @property {number} [throttleInterval] ms, leading and trailing edge, latest input wins; 0 disables
 * @property {number} [maxBuffering] 1..60
 * @property {string} [path] default "/realtime"
 * @property {boolean} [previews] ours: ask for each intermediate image (results marked `partial`)
 * @property {(appIdWithPath: string) => Promise<string>} [tokenProvider] none: connect without a token
 * @property {number} [tokenExpirationSeconds] refresh the token at 90% of this
 * @property {(input: any) => any} [encodeMessage] default: msgpack (binary frame)
 * @property {(data: any) => any} [decodeMessage] default: JSON for text frames, msgpack for binary
 */

/** `owner/alias[/path...]` as is; `NUMBER-alias` means `NUMBER/alias` (fal's ensureEndpointIdFormat). */
export function ensureEndpointIdFormat(id) {
  if (id.split("/").length > 1) return id;
  const match = /^([0-9]+)-([a-zA-Z0-9-]+)$/.exec(id);
  if (match) return `${match[1]}/${match[2]}`;
  throw new Error(`Invalid app id: ${id}. Must be in the format <appOwner>/<appId>`);
}

/** fal's resolveEndpointPath: an explicit path wins; no default when the app id already ends with it. */
export function resolveEndpointPath(app, path, defaultPath) {
  if (path) return `/${path.replace(/^\/+/, "")}`;
  return app.endsWith(defaultPath) ? undefined : defaultPath;
}

/** @returns {string} the ws origin from `location`, or throws when there is none */
function defaultBaseUrl() {
  const loc = globalThis.location;
  if (!loc || !loc.host) throw new Error("realtime: `baseUrl` is required outside a browser page");
  return `${loc.protocol === "https:" ? "wss:" : "ws:"}//${loc.host}`;
}

/**
 * @param {string} app
 * @param {{baseUrl?: string, token?: string, maxBuffering?: number, path?: string, previews?: boolean}} options
 */
export function buildRealtimeUrl(app, { baseUrl, token, maxBuffering, path, previews } = {}) {
  if (maxBuffering !== undefined && !(maxBuffering >= MAX_BUFFERING_RANGE[0] && maxBuffering <= MAX_BUFFERING_RANGE[1])) {
    throw new Error(`The \`maxBuffering\` must be between ${MAX_BUFFERING_RANGE[0]} and ${MAX_BUFFERING_RANGE[1]} (inclusive)`);
  }
  const base = (baseUrl ?? defaultBaseUrl()).replace(/^http/, "ws").replace(/\/+$/, "");
  const query = new URLSearchParams();
  if (token !== undefined) query.set("fal_jwt_token", token);
  if (maxBuffering !== undefined) query.set("max_buffering", maxBuffering.toFixed(0));
  if (previews) query.set("previews", "1");
  const resolvedPath = resolveEndpointPath(app, path, "/realtime") ?? "";
  const search = query.toString();
  return `${base}/${ensureEndpointIdFormat(app)}${resolvedPath}${search ? `?${search}` : ""}`;
}

/**
 * Leading and trailing edge throttle: the first call runs at once, later calls within `limit` ms
 * collapse into one trailing call with the latest arguments.
 * @template {any[]} A
 * @param {(...args: A) => void} func
 * @param {number} limit
 * @returns {((...args: A) => void) & {cancel: () => void}}
 */
export function throttle(func, limit) {
  let lastRan = -Infinity;
  let timer;
  let pendingArgs;
  const run = () => {
    timer = undefined;
    lastRan = Date.now();
    const args = pendingArgs;
    pendingArgs = undefined;
    func(...args);
  };
  const throttled = (...args) => {
    pendingArgs = args;
    if (timer !== undefined) return;
    const wait = limit - (Date.now() - lastRan);
    if (wait <= 0) run();
    else timer = setTimeout(run, wait);
  };
  throttled.cancel = () => {
    clearTimeout(timer);
    timer = undefined;
    pendingArgs = undefined;
  };
  return throttled;
}

/** Default encoder: bytes pass through, anything else becomes msgpack. */
export function encodeRealtimeMessage(input) {
  return input instanceof Uint8Array ? input : encode(input);
}

/** Default decoder: text frames are JSON, binary frames msgpack (a Blob gives a Promise). */
export function decodeRealtimeMessage(data) {
  if (typeof data === "string") return JSON.parse(data);
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) return decode(data);
  if (typeof Blob !== "undefined" && data instanceof Blob) {
    return data.arrayBuffer().then((buffer) => decode(buffer));
  }
  return data;
}

/** @returns {RealtimeError} */
function realtimeError(code, reason, extra = {}) {
  const error = /** @type {RealtimeError} */ (new Error(`${code}: ${reason}`));
  return Object.assign(error, { code, reason, status: ERROR_STATUS[code] ?? 400 }, extra);
}

/** Run a user callback; its exception surfaces (console / uncaught) without breaking the connection. */
function safeCall(callback, value) {
  if (!callback) return;
  try {
    callback(value);
  } catch (error) {
    queueMicrotask(() => { throw error; });
  }
}

function sendFrame(ws, message) {
  const isRaw = typeof message === "string" || message instanceof ArrayBuffer || ArrayBuffer.isView(message);
  ws.send(isRaw ? message : encode(message));
}

/** @type {Map<string, Connection>} */
const connectionCache = new Map();
let keyCounter = 0;

/** One socket and its state, shared by every `connect` call with the same `connectionKey`. */
class Connection {
  /** @param {string} key @param {string} app @param {RealtimeOptions} options */
  constructor(key, app, options) {
    this.key = key;
    this.app = app;
    this.options = options;
    this.appIdWithPath = `${ensureEndpointIdFormat(app)}${resolveEndpointPath(app, options.path, "/realtime") ?? ""}`;
    const interval = options.throttleInterval ?? DEFAULT_THROTTLE_INTERVAL;
    const enqueue = (message) => this.enqueue(message);
    this.throttledSend = interval > 0 ? throttle(enqueue, interval) : Object.assign(enqueue, { cancel() {} });
    /** @type {"idle" | "waiting" | "authorizing" | "connecting" | "open" | "closing"} */
    this.state = "idle";
    this.status = undefined;
    this.ws = undefined;
    this.pending = undefined; // the latest input not yet sent
    this.lastSent = undefined; // the latest input sent on this socket, until something answers it
    this.token = undefined;
    this.tokenFetchedAt = 0;
    this.authGeneration = 0;
    this.refreshTimer = undefined;
    this.failures = 0;
    this.authFailures = 0;
    this.retryAt = 0;
    this.backoffTimer = undefined;
    this.setStatus("idle");
  }

  setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    safeCall(this.options.onStatus, status);
  }

  /** @param {any} message an encoded input */
  enqueue(message) {
    if (!connectionCache.has(this.key)) connectionCache.set(this.key, this); // a send after close()
    if (this.state === "open" && this.ws.readyState === 1 /* OPEN */) {
      sendFrame(this.ws, message);
      this.lastSent = message;
      return;
    }
    this.pending = message;
    if (this.state === "idle") this.start();
  }

  /** Connect now, or when the backoff allows; fetch a token first when one is needed. */
  start() {
    clearTimeout(this.backoffTimer);
    const wait = this.retryAt - Date.now();
    if (wait > 0) {
      this.state = "waiting";
      this.backoffTimer = setTimeout(() => this.start(), wait);
      return;
    }
    this.setStatus("connecting");
    const { tokenProvider, tokenExpirationSeconds: life } = this.options;
    const stale = life !== undefined && Date.now() - this.tokenFetchedAt >= life * 900;
    if (!tokenProvider || (this.token !== undefined && !stale)) {
      this.openSocket();
      return;
    }
    this.state = "authorizing";
    const generation = ++this.authGeneration;
    Promise.resolve()
      .then(() => tokenProvider(this.appIdWithPath))
      .then((token) => {
        if (generation !== this.authGeneration) return;
        this.token = token;
        this.tokenFetchedAt = Date.now();
        this.openSocket();
      }, (error) => {
        if (generation !== this.authGeneration) return;
        safeCall(this.options.onError, realtimeError("UNAUTHORIZED", `token provider failed: ${error?.message ?? error}`));
        this.fail({ retry: false });
      });
  }

  openSocket() {
    const { baseUrl, maxBuffering, path, previews } = this.options;
    let ws;
    try {
      const WebSocketImpl = globalThis.WebSocket;
      if (!WebSocketImpl) throw new Error("no WebSocket implementation (set globalThis.WebSocket)");
      ws = new WebSocketImpl(buildRealtimeUrl(this.app, { baseUrl, token: this.token, maxBuffering, path, previews }));
      ws.binaryType = "arraybuffer";
    } catch (error) {
      safeCall(this.options.onError, realtimeError("CONNECTION_FAILED", error?.message ?? String(error)));
      this.fail({ retry: false });
      return;
    }
    this.state = "connecting";
    this.ws = ws;
    const socket = { opened: false, explained: false, unauthorized: false, fatal: false };
    ws.onopen = () => {
      if (this.ws !== ws) return;
      socket.opened = true;
      this.state = "open";
      this.setStatus("open");
      if (this.pending !== undefined) {
        const message = this.pending;
        this.pending = undefined;
        this.enqueue(message);
      }
    };
    ws.onmessage = (event) => this.onMessage(ws, socket, event.data);
    ws.onerror = () => {}; // a close event follows; it is reported there
    ws.onclose = (event) => this.onClose(ws, socket, event);
    this.scheduleRefresh();
  }

  onMessage(ws, socket, data) {
    if (this.ws !== ws) return;
    let decoded;
    try {
      decoded = (this.options.decodeMessage ?? decodeRealtimeMessage)(data);
    } catch (error) {
      safeCall(this.options.onError, realtimeError("DECODE_ERROR", error?.message ?? "failed to decode a message"));
      return;
    }
    if (decoded && typeof decoded.then === "function") {
      decoded.then((value) => this.ws === ws && this.handleDecoded(socket, value),
        (error) => safeCall(this.options.onError, realtimeError("DECODE_ERROR", error?.message ?? String(error))));
    } else {
      this.handleDecoded(socket, decoded);
    }
  }

  handleDecoded(socket, message) {
    if (message?.type === "x-fal-message") return;
    if (message?.type !== "x-fal-error") {
      this.failures = this.authFailures = this.retryAt = 0;
      this.lastSent = undefined;
      safeCall(this.options.onResult, message);
      return;
    }
    const code = String(message.error);
    socket.explained = true;
    if (code === "TIMEOUT") {
      // The server closes an idle session (1000); inputs from now on go on a new connection.
      this.state = "closing";
      this.pending ??= this.lastSent;
      this.lastSent = undefined;
      return;
    }
    if (code === "UNAUTHORIZED") {
      socket.unauthorized = true;
      this.discardToken();
    } else if (FATAL_ERRORS.has(code)) {
      socket.fatal = true;
    } else {
      this.lastSent = undefined; // answered (e.g. VALIDATION_ERROR); the connection goes on
    }
    safeCall(this.options.onError, realtimeError(code, message.reason ?? "", { requestId: message.request_id, body: message }));
  }

  onClose(ws, socket, event) {
    if (this.ws !== ws) return;
    this.ws = undefined;
    this.state = "idle";
    clearTimeout(this.refreshTimer);
    const code = event.code;
    if (code === CLOSE_CODE.UNAUTHORIZED) {
      socket.unauthorized = true;
      this.discardToken();
    }
    if (code !== CLOSE_CODE.NORMAL && !socket.explained) {
      const reason = event.reason || (socket.opened ? `connection closed with code ${code}` : "could not connect");
      safeCall(this.options.onError, realtimeError("CONNECTION_CLOSED", reason, { status: code }));
    }
    if (socket.fatal || FATAL_CLOSE_CODES.has(code)) {
      this.fail({ retry: false });
    } else if (socket.unauthorized) {
      this.authFailures += 1;
      this.fail({ retry: this.authFailures < 2 }); // a fresh token refused too: wait for the next send
    } else if (code !== CLOSE_CODE.NORMAL || !socket.opened) {
      this.fail({ retry: true });
    } else {
      this.lastSent = undefined;
      this.setStatus("closed");
      if (this.pending !== undefined) this.start();
    }
  }

  /** A failed attempt: back off; with `retry`, keep the latest unanswered input and try again. */
  fail({ retry }) {
    this.state = "idle";
    this.failures += 1;
    this.retryAt = Date.now() + Math.min(BACKOFF_INITIAL_MS * 2 ** (this.failures - 1), BACKOFF_MAX_MS);
    if (retry) this.pending ??= this.lastSent;
    else this.pending = undefined;
    this.lastSent = undefined;
    this.setStatus("error");
    if (this.pending !== undefined) this.start();
  }

  discardToken() {
    this.token = undefined;
    this.authGeneration += 1;
  }

  /** While a socket is up: fetch a new token at 90% of its lifetime; after a failure, retry at 5%. */
  scheduleRefresh(delayMs) {
    clearTimeout(this.refreshTimer);
    const { tokenProvider, tokenExpirationSeconds: life } = this.options;
    if (!tokenProvider || life === undefined || this.token === undefined) return;
    const delay = delayMs ?? Math.max(0, this.tokenFetchedAt + life * 900 - Date.now());
    this.refreshTimer = setTimeout(() => {
      const generation = this.authGeneration;
      Promise.resolve()
        .then(() => this.options.tokenProvider(this.appIdWithPath))
        .then((token) => {
          if (generation !== this.authGeneration) return;
          this.token = token;
          this.tokenFetchedAt = Date.now();
          if (this.ws) this.scheduleRefresh();
        }, () => {
          if (generation === this.authGeneration && this.ws) this.scheduleRefresh(Math.round(life * 50));
        });
    }, delay);
  }

  /** Close with 1000 and cancel every timer; the key's cached connection is dropped. */
  close() {
    this.throttledSend.cancel();
    clearTimeout(this.backoffTimer);
    clearTimeout(this.refreshTimer);
    this.discardToken();
    this.pending = this.lastSent = undefined;
    this.failures = this.authFailures = this.retryAt = 0;
    const ws = this.ws;
    this.ws = undefined;
    this.state = "idle";
    if (ws) ws.close(CLOSE_CODE.NORMAL);
    if (connectionCache.get(this.key) === this) connectionCache.delete(this.key);
    this.setStatus("closed");
  }
}

/**
 * Open (lazily, on the first send) a realtime connection to `app`.
 * @param {string} app `owner/alias`, `NUMBER-alias`, optionally with extra path segments
 * @param {RealtimeOptions} [options]
 * @returns {{send: (input: any) => void, close: () => void}}
 */
export function connect(app, options = {}) {
  const { maxBuffering } = options;
  if (maxBuffering !== undefined && !(maxBuffering >= MAX_BUFFERING_RANGE[0] && maxBuffering <= MAX_BUFFERING_RANGE[1])) {
    throw new Error(`The \`maxBuffering\` must be between ${MAX_BUFFERING_RANGE[0]} and ${MAX_BUFFERING_RANGE[1]} (inclusive)`);
  }
  ensureEndpointIdFormat(app);
  if (options.baseUrl === undefined) defaultBaseUrl(); // throws early outside a page
  const key = options.connectionKey ?? globalThis.crypto?.randomUUID?.() ?? `realtime-${++keyCounter}`;
  let connection = connectionCache.get(key);
  if (connection) {
    const { onResult, onError, onStatus, decodeMessage } = options;
    connection.options = { ...connection.options, onResult, onError, onStatus, decodeMessage };
    safeCall(onStatus, connection.status);
  } else {
    connection = new Connection(key, app, options);
    connectionCache.set(key, connection);
  }
  const target = connection;
  const encodeMessage = options.encodeMessage ?? encodeRealtimeMessage;
  return {
    send: (input) => target.throttledSend(encodeMessage(input)),
    close: () => target.close(),
  };
}
