#!/usr/bin/env bash
# Transport benchmark: core_ping through the real release binary over pipes, next to a
# trivial line-echo program (the floor, examples/echo_floor.rs), the same echo built as the
# sidecar is (one tokio thread, examples/echo_floor_tokio.rs) and a Node stdio JSON-RPC
# server (npm json-rpc-2.0, scripts/bench/node-server.js). Client and servers are all
# pinned to CPU 0 with `taskset -c 0` (the children inherit the client's affinity).
#
# usage: scripts/bench-transport.sh [--quick] [--strict] [--no-node] [-- bench_client flags]
#   --quick   fewer iterations (a smoke run, a few seconds)
#   --strict  exit 1 when the sidecar misses a target
#   --no-node skip the Node reference server (and the sidecar/node ratio)
# The sidecar runs with CORE_SIDECAR_KEYRING=memory unless that variable is already set,
# so the figures measure the transport, not this machine's keyring daemon.
set -euo pipefail

cd "$(dirname "$0")/.."

quick=0
node=1
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --strict) extra+=(--strict) ;;
    --no-node) node=0 ;;
    --) shift; extra+=("$@"); break ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown flag: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

echo "building release binary and bench examples..." >&2
cargo build --release --quiet --bin core-sidecar --example echo_floor --example echo_floor_tokio --example bench_client
target="${CARGO_TARGET_DIR:-target}/release"

args=(--floor "$target/examples/echo_floor" --tokio-floor "$target/examples/echo_floor_tokio" --sidecar "$target/core-sidecar")

if [ "$node" = 1 ]; then
  if command -v node >/dev/null && command -v npm >/dev/null; then
    if [ ! -d scripts/bench/node_modules/json-rpc-2.0 ]; then
      echo "installing the Node reference server (npm ci)..." >&2
      (cd scripts/bench && npm ci --no-audit --no-fund --silent) >&2
    fi
    args+=(--node-script scripts/bench/node-server.js)
  else
    echo "warning: node/npm not found; skipping the Node reference server" >&2
  fi
fi

if [ "$quick" = 1 ]; then
  args+=(--latency-n 2000 --warmup 200 --throughput-n 20000 --rounds 1 --spawns 3 --timeout-secs 120)
fi

export CORE_SIDECAR_KEYRING="${CORE_SIDECAR_KEYRING:-memory}"

pin=()
if command -v taskset >/dev/null; then
  pin=(taskset -c 0)
else
  echo "warning: taskset not found; running unpinned (figures are not comparable)" >&2
fi

cpu="$( (lscpu 2>/dev/null || true) | sed -n 's/^Model name: *//p' | head -n1)"
echo "machine: ${cpu:-unknown CPU}, $(nproc 2>/dev/null || echo '?') CPU(s); sidecar keyring: $CORE_SIDECAR_KEYRING"
"${pin[@]}" "$target/examples/bench_client" "${args[@]}" "${extra[@]}"
