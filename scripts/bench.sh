#!/usr/bin/env bash
# One command for every performance figure of the project. Builds in release mode, runs:
#   - the transport benchmark (scripts/bench-transport.sh: core_ping p50/p99 next to a
#     line-echo floor, pipelined throughput next to a Node JSON-RPC server, spawn to first
#     response, idle RSS), pinned to CPU 0;
#   - the session-gate overhead (cargo bench --bench gate);
#   - a backend round trip (composio_list_connections) through the sidecar next to the same
#     HTTP call made directly with reqwest (examples/bench_backend.rs), unpinned and pinned;
# then prints one summary table (markdown) with the targets.
#
# usage: scripts/bench.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
backend_n=(--n 5000 --warmup 500)
if [ "${1:-}" = "--quick" ]; then
  quick=(--quick)
  backend_n=(--n 300 --warmup 50)
fi

log() { printf 'bench: %s\n' "$*" >&2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

log "building (release)..."
cargo build --release --quiet --bin core-sidecar --example echo_floor --example bench_client --example bench_backend
target="${CARGO_TARGET_DIR:-target}/release"

log "transport (pinned to CPU 0)..."
scripts/bench-transport.sh "${quick[@]}" | tee "$out/transport.txt" >&2

log "session gate overhead..."
cargo bench --quiet --bench gate 2>/dev/null | tee "$out/gate.txt" >&2

log "backend round trip, unpinned..."
"$target/examples/bench_backend" --sidecar "$target/core-sidecar" "${backend_n[@]}" | tee "$out/backend.txt" >&2
pinned=()
command -v taskset >/dev/null && pinned=(taskset -c 0)
log "backend round trip, pinned to CPU 0..."
"${pinned[@]}" "$target/examples/bench_backend" --sidecar "$target/core-sidecar" "${backend_n[@]}" | tee "$out/backend-pinned.txt" >&2

# Pull the figures out of the reports.
field() { awk -v k="$2" '{for (i = 1; i <= NF; i++) if (index($i, k "=") == 1) print substr($i, length(k) + 2)}' "$1"; }
row() { awk -v name="$2" '$1 == name {print $'"$3"'}' "$1" | head -1; }
t="$out/transport.txt"
floor_p50=$(row "$t" floor 2); floor_p99=$(row "$t" floor 4)
side_p50=$(row "$t" sidecar 2); side_p99=$(row "$t" sidecar 4)
ratio_p50=$(grep -o 'sidecar/floor p50 [0-9.]*x' "$t" | awk '{print $3}')
ratio_p99=$(grep -o 'sidecar/floor p99 [0-9.]*x' "$t" | awk '{print $3}')
thr_floor=$(awk '$1 == "floor" && $3 == "req/s" {print $2}' "$t")
thr_side=$(awk '$1 == "sidecar" && $3 == "req/s" {print $2}' "$t")
thr_node=$(awk '$1 == "node" && $3 == "req/s" {print $2}' "$t")
ratio_node=$(grep -o 'sidecar/node *[0-9.]*x' "$t" | awk '{print $2}')
first=$(grep -o 'sidecar first response [0-9.]* ms' "$t" | awk '{print $4}')
idle=$(grep -o 'sidecar idle RSS [0-9.]* MB' "$t" | awk '{print $4}')
gate=$(grep 'gate overhead' "$out/gate.txt" | awk -F'|' '{gsub(/ /, "", $3); print $3}')
b="$out/backend.txt"; bp="$out/backend-pinned.txt"
loaded=$(field "$b" loaded_rss_kb)

cat <<TABLE

core-sidecar benchmarks, $(date -u +%Y-%m-%d), $(lscpu 2>/dev/null | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}'), $(nproc) cores${quick:+ (quick run)}

| figure | measured | target |
|---|---|---|
| core_ping round trip p50 (pinned) | ${side_p50} us, ${ratio_p50} the echo floor (${floor_p50} us) | <= 1.5x floor |
| core_ping round trip p99 (pinned) | ${side_p99} us, ${ratio_p99} the echo floor (${floor_p99} us) | <= 3x floor |
| pipelined throughput, 64 in flight (pinned) | ${thr_side} req/s (floor ${thr_floor}, Node json-rpc-2.0 ${thr_node:-n/a}) | >= 1.5x Node: ${ratio_node:-n/a} |
| session gate overhead, cached session | ${gate} ns per call | < 2 us |
| composio_list_connections round trip, unpinned | $(field "$b" backend_p50_us) us vs direct reqwest $(field "$b" direct_p50_us) us: $(field "$b" backend_ratio)x | <= 1.2x |
| the same, pinned to one core | $(field "$bp" backend_p50_us) us vs $(field "$bp" direct_p50_us) us: $(field "$bp" backend_ratio)x | (see README) |
| spawn to first response | ${first} ms | <= 20 ms |
| idle RSS | ${idle} MB | < 15 MB |
| RSS after the backend run | $(awk -v kb="$loaded" 'BEGIN {printf "%.1f", kb / 1024}') MB | |
TABLE
