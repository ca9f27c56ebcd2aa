// jest globalTeardown: stop the gateway and the runner started by global-setup.mjs.
export default async function globalTeardown() {
  await globalThis.__FAL_JS_SPEC_STACK__?.stop();
}
