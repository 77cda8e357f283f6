// Reference point for scripts/bench-transport.sh: a plain Node stdio JSON-RPC server
// built on npm `json-rpc-2.0`, one JSON value per line in and out, as a desktop app's
// Node sidecar would typically be written. It answers `core_ping` with {pong: true}.
"use strict";

const readline = require("node:readline");
const { JSONRPCServer } = require("json-rpc-2.0");

const server = new JSONRPCServer();
server.addMethod("core_ping", () => ({ pong: true }));

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on("line", (line) => {
  server.receiveJSON(line).then((response) => {
    if (response) {
      process.stdout.write(JSON.stringify(response) + "\n");
    }
  });
});
rl.on("close", () => {
  // Let pending writes drain, then exit.
  process.stdout.end();
});
