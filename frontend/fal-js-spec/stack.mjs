// The real server behind fal-js's realtime spec: one runner (python -m realtime_site.runner) serving
// the spec's app ids, and one gateway (daphne) in front of it, each its own process on a free port,
// set up the way tests/gateway/stack.py does it. Also mints the real tokens the spec's sockets use.
import { spawn, execFile } from "node:child_process";
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

import { decode, encode } from "@msgpack/msgpack";
import { WebSocket } from "ws";

import { PYTHON, REPO, closedPort, echoInput, sleep } from "../tests/helpers.mjs";

const run = promisify(execFile);

/** The spec's app ids ("123-myapp" with path "/custom/path", "456-otherapp") as runner apps. */
export const RUNNER_APPS = "123/myapp=echo?paths=realtime+custom/path,456/otherapp=echo,local/echo";

const USER = "jay";
const PASSWORD = "pw-jay-123456";

/** SIGTERM, then SIGKILL after 10 s; resolves once the process has exited. */
async function stopProcess(proc) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((done) => proc.once("exit", done));
  proc.kill("SIGTERM");
  const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}

function startRunner(env, apps) {
  const args = ["-m", "realtime_site.runner", "--apps", apps, "--host", "127.0.0.1", "--port", "0"];
  const proc = spawn(PYTHON, args, { cwd: REPO, env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  proc.stderr.on("data", (chunk) => { stderr += chunk; });
  return new Promise((resolve, reject) => {
    const fail = (why) => {
      clearTimeout(timer);
      stopProcess(proc).finally(() => reject(new Error(`runner ${why}\nstdout: ${stdout}\nstderr: ${stderr}`)));
    };
    const timer = setTimeout(() => fail("did not start in 30 s"), 30_000);
    proc.once("error", (error) => fail(`could not start: ${error.message}`));
    proc.once("exit", (code) => fail(`exited with ${code} before listening`));
    proc.stdout.on("data", (chunk) => {
      stdout += chunk;
      const match = /runner listening on ws:\/\/127\.0\.0\.1:(\d+)/.exec(stdout);
      if (!match) return;
      clearTimeout(timer);
      proc.removeAllListeners("exit");
      resolve({ proc, url: `ws://127.0.0.1:${match[1]}` });
    });
  });
}

async function manage(env, ...args) {
  try {
    const { stdout } = await run(PYTHON, ["manage.py", ...args], { cwd: REPO, env, timeout: 120_000 });
    return stdout;
  } catch (error) {
    throw new Error(`manage.py ${args.join(" ")} failed:\n${error.stdout ?? ""}\n${error.stderr ?? error.message}`);
  }
}

async function startDaphne(env, varDir) {
  const port = await closedPort();
  const logPath = join(varDir, "daphne.log");
  const log = openSync(logPath, "a");
  const proc = spawn(
    PYTHON,
    ["-m", "daphne", "-b", "127.0.0.1", "-p", String(port), "realtime_site.asgi:application"],
    { cwd: REPO, env, stdio: ["ignore", log, log] },
  );
  closeSync(log); // the child keeps its own descriptor
  const http = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline && proc.exitCode === null) {
    try {
      if ((await fetch(`${http}/accounts/login/`)).status === 200) return { proc, port, http, logPath };
    } catch {
      // not listening yet
    }
    await sleep(200);
  }
  await stopProcess(proc);
  throw new Error(`daphne did not start:\n${readFileSync(logPath, "utf8")}`);
}

/** POST {gateway}/tokens/ as fal's getTemporaryAuthToken does; the body is the JWT as a JSON string. */
export async function mintToken(http, key, alias) {
  const response = await fetch(`${http}/tokens/`, {
    method: "POST",
    headers: { Authorization: `Key ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify({ allowed_apps: [alias], token_expiration: 120 }),
  });
  const body = await response.text();
  if (response.status !== 200 && response.status !== 201) {
    throw new Error(`POST /tokens/ for ${alias} answered ${response.status}: ${body}`);
  }
  const token = JSON.parse(body);
  if (typeof token !== "string") throw new Error(`POST /tokens/ did not answer a JSON string: ${body}`);
  return token;
}

/**
 * Whether the gateway serves `url` end to end: the gateway accepts every socket and refuses after
 * that (an error, a close), so this sends the echo app an input and waits for its result.
 */
function probe(url) {
  return new Promise((resolve) => {
    const socket = new WebSocket(url);
    const done = (ready) => {
      clearTimeout(timer);
      socket.terminate();
      resolve(ready);
    };
    const timer = setTimeout(() => done(false), 5_000);
    socket.once("open", () => socket.send(encode(echoInput(1))));
    socket.once("message", (data, isBinary) => {
      try {
        done(isBinary && decode(data)?.request_id === 1);
      } catch {
        done(false);
      }
    });
    socket.once("close", () => done(false));
    socket.once("error", () => done(false));
  });
}

/**
 * Start runner + gateway, create the user and an API key, mint tokens. `apps`: the runner's --apps
 * (the spec's by default; they must include myapp, otherapp and local/echo).
 * @typedef {{myapp: string, myappCustom: string, otherapp: string}} Tokens
 * @returns {Promise<{ws: string, http: string, key: string, tokens: Tokens, stop: () => Promise<void>}>}
 */
export async function startStack({ apps = RUNNER_APPS } = {}) {
  const varDir = mkdtempSync(join(tmpdir(), "fal-js-spec-"));
  const base = { ...process.env };
  for (const name of ["DATABASE_URL", "REDIS_URL"]) delete base[name];
  for (const name of Object.keys(base)) if (name.startsWith("RUNNER_")) delete base[name];
  let runner;
  let daphne;
  const stop = async () => {
    await stopProcess(daphne?.proc);
    await stopProcess(runner?.proc);
    rmSync(varDir, { recursive: true, force: true });
  };
  try {
    runner = await startRunner(base, apps);
    const env = {
      ...base,
      REALTIME_VAR_DIR: varDir,
      RUNNER_URLS: runner.url,
      RUNNER_HEALTH_INTERVAL: "0.5",
      DJANGO_SETTINGS_MODULE: "realtime_site.settings",
      REALTIME_CONNECTS_PER_SECOND: "0",
      REALTIME_CREDENTIAL_FAILURES: "0",
    };
    await manage(env, "migrate", "--noinput");
    await manage(env, "collectstatic", "--noinput", "-v", "0");
    const createUser = `get_user_model().objects.create_user('${USER}', password='${PASSWORD}')`;
    await manage(env, "shell", "-c", `from django.contrib.auth import get_user_model; ${createUser}`);
    const key = (await manage(env, "create_api_key", USER)).trim();
    if (!/^[^:\s]+:\S+$/.test(key)) throw new Error(`create_api_key printed ${JSON.stringify(key)}`);
    daphne = await startDaphne(env, varDir);
    const ws = `ws://127.0.0.1:${daphne.port}`;
    // Separate tokens, so that the spec's "mock-token" (fal's getTemporaryAuthToken) and
    // "custom-token" (a tokenProvider) stay different values, as they are in the spec.
    const tokens = {
      myapp: await mintToken(daphne.http, key, "myapp"),
      myappCustom: await mintToken(daphne.http, key, "myapp"),
      otherapp: await mintToken(daphne.http, key, "otherapp"),
    };
    // The gateway learns the runner's health every 0.5 s: wait until a frame makes the round trip.
    const deadline = Date.now() + 30_000;
    while (!(await probe(`${ws}/123/myapp/realtime?fal_jwt_token=${tokens.myapp}`))) {
      if (Date.now() > deadline) {
        throw new Error(`the gateway serves no frame:\n${readFileSync(daphne.logPath, "utf8")}`);
      }
      await sleep(200);
    }
    return { ws, http: daphne.http, key, tokens, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
