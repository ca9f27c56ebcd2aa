// jest runs fal-js's own realtime spec (fal-js-spec/) against our real server; node --test runs tests/.
/** @type {import("jest").Config} */
module.exports = {
  rootDir: __dirname,
  testEnvironment: "node",
  testMatch: ["<rootDir>/fal-js-spec/**/*.spec.ts"],
  transform: {
    "\\.ts$": [
      "babel-jest",
      {
        babelrc: false,
        configFile: false,
        presets: ["@babel/preset-typescript"],
        plugins: ["@babel/plugin-transform-modules-commonjs"],
      },
    ],
  },
  // The spec imports the client's internal modules as "./config", "./realtime", "./auth" (it lives
  // beside them upstream): the published package's compiled ones. realtime.js requires "./auth"
  // from the same folder, so jest.mock("./auth") and realtime.js resolve to one module.
  moduleNameMapper: {
    "^\\./(auth|config|realtime)$": "<rootDir>/node_modules/@fal-ai/client/src/$1.js",
  },
  globalSetup: "<rootDir>/fal-js-spec/global-setup.mjs",
  globalTeardown: "<rootDir>/fal-js-spec/global-teardown.mjs",
  testTimeout: 30_000,
};
