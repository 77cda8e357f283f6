// core-sidecar from Node (an Electron main process, a CLI): README.md shows this file as is,
// and the tests run it. `node examples/quickstart.mjs` prints one `<what> <JSON>` line a step.
import { spawnSidecar, SidecarError } from "core-sidecar-client";

// Which binary: { path }, else $CORE_SIDECAR_BIN, else target/release then target/debug of
// this repository, else `core-sidecar` on PATH. `env` is merged over process.env.
const sidecar = spawnSidecar({
  env: { CORE_SIDECAR_BACKEND_URL: process.env.CORE_SIDECAR_BACKEND_URL ?? "https://api.example.com" },
});

// Typed by the contract: INITIAL_SESSION comes first, then one event per session change.
sidecar.on("auth_state_changed", ({ event, reason, state }) => {
  console.log("auth_state_changed", JSON.stringify({ event, reason, userId: state.userId }));
});
// A line no request waits for (e.g. an `"id": null` parse-error reply): logged, never thrown.
sidecar.on("protocol_error", ({ line }) => console.error("core-sidecar said:", line));

console.log("core_ping", JSON.stringify(await sidecar.request("core_ping")));
const state = await sidecar.request("auth_get_state");
console.log("auth_get_state", JSON.stringify(state));

try {
  const { toolkits } = await sidecar.request("composio_list_toolkits");
  console.log("composio_list_toolkits", JSON.stringify(toolkits));
} catch (error) {
  if (!(error instanceof SidecarError)) throw error;
  // Signed out: `auth_expired`, show the sign-in. Offline: `unavailable` (error.retryable).
  console.log("composio_list_toolkits error", JSON.stringify({ code: error.code, kind: error.kind }));
}

// On quit: EOF on stdin, the sidecar answers what is in flight and exits 0.
console.log("exit", await sidecar.close());
