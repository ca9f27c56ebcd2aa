/**
 * The real WebSocket that stands in for fal-js's MockWebSocket in realtime.spec.ts.
 *
 * Each instance opens a real WebSocket (the `ws` package, in socket-worker.cjs) to our gateway,
 * started by global-setup.mjs. What the spec reads stays as it was:
 *
 * - `url` is the address as @fal-ai/client built it (`wss://fal.run/...`); the socket connects to
 *   `address`, that same URL with only `wss://fal.run/` rewritten to the gateway (the client
 *   hard-codes fal.run, as in tests/fal-client.test.mjs).
 * - `send` and `close` are jest.fn spies that also do the real thing.
 * - `triggerOpen()` means "the socket opened": it blocks (Atomics.wait) until the real socket's
 *   open event (the gateway's 101), then fires `onopen` as a socket does, so the spec goes on
 *   synchronously as it does with its mock. Had the socket closed instead, it throws with why.
 * - A socket the spec never triggers fires `onopen` by itself at its real open event, and messages
 *   and closes from the gateway reach `onmessage`, `onerror` and `onclose`; the spec's test bodies
 *   only await microtasks, so those arrive after its assertions. (The spec's own
 *   `socket.onmessage?.(...)` calls still feed the client the messages its assertions are about.)
 *
 * After each test (and after the spec's own afterEach), each of its sockets is waited for until the
 * gateway answered the frame the client sent, then closed (1000); a socket the gateway did not
 * admit (see checkAdmitted) fails that test, so each case also shows that our server took the real
 * token, app id and path the client built, and relayed the client's frame to the runner.
 */
import { join } from "node:path";
import { MessageChannel, MessagePort, Worker, receiveMessageOnPort } from "node:worker_threads";

/** Our gateway, e.g. ws://127.0.0.1:PORT (global-setup.mjs). */
export const GATEWAY_WS = requiredEnv("FAL_SPEC_GATEWAY_WS");

/** Real tokens minted by our POST /tokens/ (global-setup.mjs), in place of the spec's literals. */
export const realTokens = {
  /** for "mock-token": what fal's getTemporaryAuthToken would get for "123-myapp" (alias myapp) */
  myapp: requiredEnv("FAL_SPEC_TOKEN_MYAPP"),
  /** for "custom-token": a tokenProvider's token for 123/myapp, another token than `myapp` */
  myappCustom: requiredEnv("FAL_SPEC_TOKEN_MYAPP_CUSTOM"),
  /** for "my-custom-token": a tokenProvider's token for 456/otherapp */
  otherapp: requiredEnv("FAL_SPEC_TOKEN_OTHERAPP"),
};

const FAL_REALTIME_BASE = "wss://fal.run/";
/** Atomics.wait slices (Date and performance are fake in the spec): 200 x 50 ms = 10 s to open. */
const OPEN_WAIT_SLICES = 200;
const OPEN_WAIT_SLICE_MS = 50;
const SETTLE_TIMEOUT_MS = 10_000;

function requiredEnv(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run this spec with jest.config.cjs (its globalSetup starts the server)`);
  }
  return value;
}

let worker: Worker | undefined;
function socketWorker(): Worker {
  if (!worker) {
    worker = new Worker(join(__dirname, "socket-worker.cjs"));
    worker.on("error", (error) => console.error("socket worker failed:", error));
  }
  return worker;
}

type WorkerEvent =
  | { type: "open" }
  | { type: "message"; data: string | Uint8Array }
  | { type: "error"; message: string }
  | { type: "close"; code: number; reason: string };

/** Every socket of the running test, settled and closed after it. */
const live: RealWebSocket[] = [];

export class RealWebSocket {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;

  public readonly url: string;
  /** Where it really connects: `url` with wss://fal.run/ rewritten to our gateway. */
  public readonly address: string;
  public onopen?: (event?: any) => void;
  public onclose?: (event: any) => void;
  public onerror?: (event: any) => void;
  public onmessage?: (event: any) => void;
  public readyState = RealWebSocket.CONNECTING;
  public readonly send = jest.fn((data: unknown) => {
    this.port.postMessage({ op: "send", data });
  });
  public readonly close = jest.fn((code?: number, reason?: string) => {
    this.shutDown(code, reason);
  });

  /** What really happened: opened by the gateway, errors, the close, messages from the gateway. */
  public opened = false;
  public readonly errors: string[] = [];
  public closeEvent?: { code: number; reason: string };
  public readonly received: Array<string | Uint8Array> = [];

  private readonly port: MessagePort;
  private readonly signal = new Int32Array(new SharedArrayBuffer(4));
  private settledWaiters: Array<() => void> = [];
  private closedWaiters: Array<() => void> = [];
  private answeredWaiters: Array<() => void> = [];

  constructor(url: string) {
    this.url = url;
    if (!url.startsWith(FAL_REALTIME_BASE)) {
      throw new Error(`expected the client to build a ${FAL_REALTIME_BASE} address, got ${url}`);
    }
    this.address = `${GATEWAY_WS}/${url.slice(FAL_REALTIME_BASE.length)}`;
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    this.port.on("message", (event: WorkerEvent) => this.handle(event));
    socketWorker().postMessage({ op: "open", url: this.address, port: port2, signal: this.signal }, [port2]);
    live.push(this);
  }

  /** Block until the gateway really opened this socket (then `onopen` has run). */
  triggerOpen() {
    for (let slice = 0; !this.opened; slice++) {
      if (this.closeEvent) throw new Error(`our gateway refused ${this.address}: ${this.describe()}`);
      if (slice > OPEN_WAIT_SLICES) throw new Error(`${this.address} did not open in 10 s`);
      const seen = Atomics.load(this.signal, 0);
      const next = receiveMessageOnPort(this.port);
      if (next) {
        this.handle(next.message as WorkerEvent);
        continue;
      }
      Atomics.wait(this.signal, 0, seen, OPEN_WAIT_SLICE_MS);
    }
  }

  /** Close the real socket (with 1000 unless told otherwise), not through the `close` spy. */
  shutDown(code = 1000, reason?: string) {
    if (this.readyState >= RealWebSocket.CLOSING) return;
    this.readyState = RealWebSocket.CLOSING;
    this.port.postMessage({ op: "close", code, reason });
  }

  /** Resolves once the socket opened or was refused. */
  settled(): Promise<void> {
    if (this.opened || this.closeEvent) return Promise.resolve();
    return new Promise((resolve) => this.settledWaiters.push(resolve));
  }

  /** Resolves once the gateway sent a message or the socket closed. */
  answered(): Promise<void> {
    if (this.received.length || this.closeEvent) return Promise.resolve();
    return new Promise((resolve) => this.answeredWaiters.push(resolve));
  }

  /** Resolves once the socket closed. */
  closed(): Promise<void> {
    if (this.closeEvent) return Promise.resolve();
    return new Promise((resolve) => this.closedWaiters.push(resolve));
  }

  describe(): string {
    const { closeEvent } = this;
    const close = closeEvent ? `closed ${closeEvent.code} ${JSON.stringify(closeEvent.reason)}` : "not closed";
    return [...this.errors, close].join("; ");
  }

  private handle(event: WorkerEvent) {
    switch (event.type) {
      case "open":
        if (this.opened) return;
        this.opened = true;
        if (this.readyState === RealWebSocket.CONNECTING) this.readyState = RealWebSocket.OPEN;
        this.wake("settled");
        this.onopen?.({ type: "open" });
        return;
      case "message": {
        // into this realm's types, as the client's decoders test with instanceof
        const data = typeof event.data === "string" ? event.data : new Uint8Array(event.data);
        this.received.push(data);
        this.wake("answered");
        this.onmessage?.({ type: "message", data });
        return;
      }
      case "error":
        this.errors.push(event.message);
        this.onerror?.({ type: "error", message: event.message });
        return;
      case "close":
        this.readyState = RealWebSocket.CLOSED;
        this.closeEvent = { code: event.code, reason: event.reason };
        this.port.close();
        this.wake("settled");
        this.wake("closed");
        this.wake("answered");
        this.onclose?.({ type: "close", code: event.code, reason: event.reason, wasClean: event.code !== 1006 });
        return;
    }
  }

  private wake(which: "settled" | "answered" | "closed") {
    const waiters = { settled: this.settledWaiters, answered: this.answeredWaiters, closed: this.closedWaiters }[which];
    waiters.splice(0).forEach((resolve) => resolve());
  }
}

function withTimeout(promise: Promise<void>, what: string): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<void>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), SETTLE_TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Whether our gateway admitted `socket`: it accepts every socket first and refuses after that with
 * an error message and a close (4401, 4403, ...), so "opened" is not enough. An admitted socket
 * gets an answer to the client's frame from the runner (here a VALIDATION_ERROR, as the spec's
 * inputs are not the echo app's), and its close handshake is ours (1000).
 */
async function checkAdmitted(socket: RealWebSocket): Promise<string | undefined> {
  await withTimeout(socket.settled(), `${socket.address} to open or be refused`);
  if (socket.opened && socket.send.mock.calls.length > 0) {
    await withTimeout(socket.answered(), `an answer on ${socket.address}`);
  }
  socket.shutDown();
  await withTimeout(socket.closed(), `${socket.address} to close`);
  const admitted = socket.opened && socket.closeEvent?.code === 1000 &&
    (socket.send.mock.calls.length === 0 || socket.received.length > 0);
  if (admitted) return undefined;
  const answers = socket.received.map((data) => (typeof data === "string" ? data : `${data.length} bytes`));
  return `${socket.address}: ${socket.describe()}; answers: ${answers.join(", ") || "none"}`;
}

// Registered here, outside the spec's describe, so it runs after the spec's own afterEach (which
// restores the real timers this needs).
afterEach(async () => {
  const refused: string[] = [];
  for (const socket of live.splice(0)) {
    const why = await checkAdmitted(socket);
    if (why) refused.push(why);
  }
  if (refused.length) throw new Error(`our gateway did not admit the client's socket:\n${refused.join("\n")}`);
});

afterAll(async () => {
  await worker?.terminate();
  worker = undefined;
});
