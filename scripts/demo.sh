#!/usr/bin/env bash
# The main job, for a newcomer on a fresh machine (no accounts, nothing leaves the machine):
#
#   1. builds the sidecar, the dev backend (examples/dev_backend.rs) and the demo driver
#      (examples/demo.rs), debug profile;
#   2. starts the dev backend on 127.0.0.1 (any free port) and reads its `LISTENING <port>`:
#      the product routes and a GoTrue-compatible auth server under /auth/v1, in memory, with
#      one user (demo@example.com, password demo-password); its log goes to a temporary file
#      (shown only if the demo fails), and so do the one-time codes it "emails";
#   3. runs the driver: it spawns the sidecar over pipes, as a desktop app would, with
#      CORE_SIDECAR_BACKEND_URL and CORE_SIDECAR_AUTH_URL pointing at the dev backend, and
#      walks through 23 checked steps: signed out at start, a refused gated call, a real
#      sign-in with an emailed code (a wrong one refused first; the driver reads the right one
#      at GET /dev/otp), gated calls, sign-out, a second sign-in with OAuth and PKCE (the
#      driver plays the browser and takes the code from the redirect), the Composio and user
#      methods, a backend 401 healed by one refresh, a server-side session end (signed out)
#      and shutdown, printing each request, its result and each notification. It fails
#      (exit 1) if any step does not behave as expected or if a token, auth code or PKCE
#      verifier appears in any output, so this script is also a smoke test.
#
# The sidecar runs with CORE_SIDECAR_KEYRING=memory unless you set CORE_SIDECAR_KEYRING (for
# example `CORE_SIDECAR_KEYRING=auto scripts/demo.sh` to use the OS keyring, under the
# profile `demo`), and RUST_LOG=warn. The dev backend and the sidecar are stopped on exit.
#
# Usage: scripts/demo.sh        (from anywhere; no arguments)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '%s\n' "$*" >&2; }
die() {
    say "demo.sh: $*"
    exit 1
}

command -v cargo >/dev/null 2>&1 ||
    die "cargo not found. Install Rust first: https://rustup.rs (then open a new shell)."
if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1 &&
    ! command -v clang >/dev/null 2>&1; then
    die "no C compiler/linker found; cargo needs one to link (and to build the crypto crate).
Debian/Ubuntu: sudo apt-get install build-essential    Fedora: sudo dnf install gcc
macOS: xcode-select --install"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/core-sidecar-demo.XXXXXX")
BACKEND_PID=
cleanup() {
    local pid
    if [ -s "$tmp/sidecar.pid" ]; then
        pid=$(cat "$tmp/sidecar.pid")
        kill "$pid" 2>/dev/null || true
    fi
    if [ -n "$BACKEND_PID" ]; then
        kill "$BACKEND_PID" 2>/dev/null || true
        wait "$BACKEND_PID" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "building core-sidecar, the dev backend and the demo (cargo, debug; the first build takes a few minutes)..."
if ! cargo build --quiet --bin core-sidecar --example dev_backend --example demo; then
    die "the build failed (see above). If a linker or a C compiler is missing, install one:
Debian/Ubuntu: sudo apt-get install build-essential"
fi

target="${CARGO_TARGET_DIR:-target}/debug"

# The dev backend prints `LISTENING <port>` first; its request log goes to a file.
coproc BACKEND { exec "$target/examples/dev_backend" --port 0 2>"$tmp/backend.log"; }
BACKEND_PID=$BACKEND_PID
line=
read -r -t 30 line <&"${BACKEND[0]}" || true
port=${line#LISTENING }
case "$port" in
'' | *[!0-9]*)
    cat "$tmp/backend.log" >&2 || true
    die "the dev backend did not start (expected 'LISTENING <port>', got '$line')"
    ;;
esac

# The driver reaps (or kills) the sidecar whenever it returns; the pid file only matters
# when the driver itself is killed.
status=0
"$target/examples/demo" \
    --backend "http://127.0.0.1:$port" \
    --sidecar "$target/core-sidecar" \
    --sidecar-pid-file "$tmp/sidecar.pid" || status=$?
rm -f "$tmp/sidecar.pid"
if [ "$status" -ne 0 ]; then
    say ""
    say "dev backend log:"
    sed 's/^/  /' "$tmp/backend.log" >&2 || true
    exit "$status"
fi
