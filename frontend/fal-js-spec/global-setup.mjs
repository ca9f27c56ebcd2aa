// jest globalSetup: start the real server (stack.mjs) once, before the spec file loads, and hand
// its address and real tokens to the spec through the environment (a jest.mock factory runs when
// the spec's imports load, so the tokens must be known by then).
import { startStack } from "./stack.mjs";

export default async function globalSetup() {
  const stack = await startStack();
  globalThis.__FAL_JS_SPEC_STACK__ = stack; // read by global-teardown.mjs
  process.env.FAL_SPEC_GATEWAY_WS = stack.ws;
  process.env.FAL_SPEC_TOKEN_MYAPP = stack.tokens.myapp;
  process.env.FAL_SPEC_TOKEN_MYAPP_CUSTOM = stack.tokens.myappCustom;
  process.env.FAL_SPEC_TOKEN_OTHERAPP = stack.tokens.otherapp;
}
