#!/usr/bin/env bash
# The main job, for a newcomer on a fresh machine (no accounts, nothing leaves the machine):
#
#   1. builds the sidecar, the dev backend (examples/dev_backend.rs) and the demo driver
#      (examples/demo.rs), debug profile;
#   2. starts the dev backend on 127.0.0.1 (any free port) and reads its `LISTENING <port>`;
#   3. runs the driver: it spawns the sidecar over pipes, as a desktop app would, and walks
#      through sign-in, the Composio and user methods, a server-side revocation and sign-out,
#      printing each request, its result and each notification; it fails (exit 1) if any
#      step does not behave as expected, so this script is also a smoke test.
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
