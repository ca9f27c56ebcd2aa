// Test helpers: the Python runner as a child process, a fake WebSocket, small waits.
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const PYTHON = process.env.REALTIME_PYTHON || join(REPO, ".venv", "bin", "python");

/** A 64x64 red PNG. */
export const PNG_64 = Uint8Array.from(Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAEAAAABACAIAAAAlC+aJAAAAYklEQVR4nO3PMQ0AIADAMEAI/qUgCxEcDcmqYJtn7/GzpQNeNaA1oDWgNaA1oDWgNaA1oDWgNaA1oDWgNaA1oDWgNaA1oDWgNaA1oDWgNaA1oDWgNaA1oDWgNaA1oDWgNaBdQ3UBhOjh6FcAAAAASUVORK5CYII=",
  "base64",
));

/** An input the echo app accepts. */
export function echoInput(requestId, extra = {}) {
  return { prompt: "x", image_bytes: PNG_64, width: 64, height: 64, request_id: requestId, ...extra };
}

/**
 * Start `python -m realtime_site.runner` on a free loopback port (no RUNNER_* settings from the env).
 * @param {string[]} extraArgs
 * @returns {Promise<{port: number, baseUrl: string, healthz: () => Promise<any>, stop: () => Promise<void>}>}
 */
export function startRunner(extraArgs = []) {
  const env = { ...process.env };
  for (const name of Object.keys(env)) if (name.startsWith("RUNNER_")) delete env[name];
  const args = ["-m", "realtime_site.runner", "--host", "127.0.0.1", "--port", "0",
    "--apps", "local/echo,test/slow=echo?delay_ms=200", ...extraArgs];
  const proc = spawn(PYTHON, args, { cwd: REPO, env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  proc.stderr.on("data", (chunk) => { stderr += chunk; });
  const exited = new Promise((done) => proc.once("exit", done));
  const stop = async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill("SIGTERM");
    const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  };
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`runner did not start in 30 s\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, 30_000);
    proc.once("error", (error) => { clearTimeout(timer); reject(error); });
    proc.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`runner exited with ${code} before listening\nstdout: ${stdout}\nstderr: ${stderr}`));
    });
    proc.stdout.on("data", (chunk) => {
      stdout += chunk;
      const match = /runner listening on ws:\/\/127\.0\.0\.1:(\d+)/.exec(stdout);
      if (!match) return;
      clearTimeout(timer);
      const port = Number(match[1]);
      resolvePromise({
        port,
        baseUrl: `ws://127.0.0.1:${port}`,
        healthz: async () => (await fetch(`http://127.0.0.1:${port}/healthz`)).json(),
        stop,
      });
    });
  });
}

/** A loopback port nothing listens on (bound, then released). */
export function closedPort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = /** @type {import("node:net").AddressInfo} */ (server.address());
      server.close(() => done(port));
    });
  });
}

export const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/** Poll `predicate` (sync or async) until it is truthy; fail after `timeoutMs`. */
export async function waitFor(predicate, { timeoutMs = 10_000, intervalMs = 20, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** A stand-in for the browser's WebSocket that the test drives by hand. */
export class FakeWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 3;
  /** @type {FakeWebSocket[]} */
  static instances = [];

  constructor(url) {
    this.url = url;
    this.readyState = FakeWebSocket.CONNECTING;
    this.binaryType = "blob";
    this.sent = [];
    this.closedWith = undefined;
    FakeWebSocket.instances.push(this);
  }

  send(data) {
    if (this.readyState !== FakeWebSocket.OPEN) throw new Error("send on a socket that is not open");
    this.sent.push(data);
  }

  close(code) {
    this.closedWith = code;
    this.readyState = FakeWebSocket.CLOSED;
  }

  serverOpen() {
    this.readyState = FakeWebSocket.OPEN;
    this.onopen?.({});
  }

  serverMessage(data) {
    this.onmessage?.({ data });
  }

  serverClose(code, reason = "") {
    this.readyState = FakeWebSocket.CLOSED;
    this.onerror?.({});
    this.onclose?.({ code, reason });
  }

  static reset() {
    FakeWebSocket.instances = [];
  }

  static last() {
    return FakeWebSocket.instances.at(-1);
  }
}
