// The real WebSockets behind real-socket.ts, in a worker thread: here `ws` runs on Node's own timers
// and process.nextTick, which the spec's jest.useFakeTimers() replaces in the test's realm (ws needs
// process.nextTick to deliver frames), and the spec's thread can block until a socket really opened.
//
// From the spec's thread (parentPort): {op: "open", url, port, signal}, one per socket, with a
// MessagePort of its own and an Int32Array on a SharedArrayBuffer. On that port, in: {op: "send",
// data} and {op: "close", code, reason}; out, in order: {type: "open"}, {type: "message", data},
// {type: "error", message}, {type: "close", code, reason}. After each message out, signal[0] is
// incremented and notified, so the other thread can wait for it with Atomics.wait.
"use strict";

const { parentPort } = require("node:worker_threads");
const { WebSocket } = require("ws");

parentPort.on("message", ({ op, url, port, signal }) => {
  if (op !== "open") return;
  const post = (message) => {
    port.postMessage(message);
    Atomics.add(signal, 0, 1);
    Atomics.notify(signal, 0);
  };
  const socket = new WebSocket(url);
  socket.on("open", () => post({ type: "open" }));
  socket.on("message", (data, isBinary) => {
    post({ type: "message", data: isBinary ? new Uint8Array(data) : data.toString("utf8") });
  });
  socket.on("error", (error) => post({ type: "error", message: error.message }));
  socket.on("close", (code, reason) => {
    post({ type: "close", code, reason: reason.toString("utf8") });
    port.close();
  });
  port.on("message", (message) => {
    if (message.op === "send" && socket.readyState === WebSocket.OPEN) {
      socket.send(message.data);
    } else if (message.op === "close") {
      socket.close(message.code, message.reason);
    }
  });
});
