// A shell's use of the client, type-checked by test/types.test.mjs with `tsc --strict`. The
// test also compiles copies with one line changed (marked below) and expects them to fail.
import { spawnSidecar, SidecarError, type AuthState, type ErrorKind } from "core-sidecar-client";

const sidecar = spawnSidecar({ env: { CORE_SIDECAR_KEYRING: "memory" }, stderr: "ignore" });
sidecar.on("auth_state_changed", ({ event, reason, state }) => {
  const signedOut: boolean = event === "SIGNED_OUT" && reason !== undefined && !state.isAuthenticated;
  console.log(signedOut, state.userId?.toUpperCase());
});
const pong: true = (await sidecar.request("core_ping")).pong; // METHOD
const state: AuthState = await sidecar.request("auth_sign_in_with_password", { email: "a@example.com", password: "pw" }); // PARAM
const { toolkits } = await sidecar.request("composio_list_toolkits");
try {
  await sidecar.request("composio_authorize", { toolkit: toolkits[0] ?? "github" });
} catch (error) {
  const kind: ErrorKind | undefined = error instanceof SidecarError ? error.kind : undefined;
  console.log(kind === "auth_expired" ? "sign in" : kind);
}
const code: number | null = await sidecar.close();
console.log(pong, state.isAuthenticated, code);
