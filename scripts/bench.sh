#!/usr/bin/env bash
# Every performance figure of the project, from one command, as one markdown table.
#
# Builds in release mode once (fat LTO, as the shipped binary: minutes the first time), then runs:
#   1. the transport benchmark (scripts/bench-transport.sh -> examples/bench_client.rs):
#      core_ping p50/p99 next to a line-echo floor (examples/echo_floor.rs) and the same echo
#      on one tokio thread (examples/echo_floor_tokio.rs, the sidecar's design), pipelined
#      throughput next to the floor and a Node JSON-RPC server (when node/npm exist), spawn
#      to first response, idle RSS; every process pinned to CPU 0;
#   2. the session-gate overhead (cargo bench --bench gate);
#   3. the backend round trip (examples/bench_backend.rs): composio_list_connections through
#      the sidecar next to the same GET made directly with reqwest, against a local backend
#      process; once unpinned, once pinned to CPU 0; RSS of the sidecar after the run;
#   4. the size of the shipped binary, when scripts/dist.sh has built it.
# The detailed reports go to stderr as they come; the summary table goes to stdout.
#
# usage: scripts/bench.sh [--quick] [--no-node] [--baseline PATH]
#   --quick          a smoke run (a minute or so, figures are rough)
#   --no-node        skip the Node reference server
#   --baseline PATH  also run another core-sidecar binary (an older build copied aside),
#                    interleaved with this one in every benchmark: an A/B under one noise
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
transport=()
baseline=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1; transport+=(--quick) ;;
    --no-node) transport+=(--no-node) ;;
    --baseline)
      [ $# -ge 2 ] || { echo "--baseline needs a path" >&2; exit 2; }
      baseline=(--baseline "$(realpath "$2")"); shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown flag: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
backend_args=(--n 5000 --warmup 500 --profile-n 2000)
[ "$quick" = 1 ] && backend_args=(--quick)
backend_args+=("${baseline[@]}")

log() { printf '\n== bench: %s\n' "$*" >&2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

log "building (release)"
cargo build --release --quiet --bin core-sidecar \
  --example echo_floor --example echo_floor_tokio --example bench_client --example bench_backend
cargo bench --quiet --no-run --bench gate 2>/dev/null
target="${CARGO_TARGET_DIR:-target}/release"

pin=()
if command -v taskset >/dev/null; then
  pin=(taskset -c 0)
else
  echo "warning: taskset not found; the 'pinned' figures run unpinned" >&2
fi

log "transport, pinned to CPU 0 (scripts/bench-transport.sh)"
scripts/bench-transport.sh "${transport[@]}" -- --json "${baseline[@]}" | tee "$out/transport.txt" >&2

log "session gate overhead (cargo bench --bench gate)"
cargo bench --quiet --bench gate 2>/dev/null | tee "$out/gate.txt" >&2

log "backend round trip, unpinned (examples/bench_backend.rs)"
"$target/examples/bench_backend" --sidecar "$target/core-sidecar" "${backend_args[@]}" --json \
  | tee "$out/backend.txt" >&2
log "backend round trip, pinned to CPU 0"
"${pin[@]}" "$target/examples/bench_backend" --sidecar "$target/core-sidecar" "${backend_args[@]}" --json \
  | tee "$out/backend-pinned.txt" >&2

# A numeric field of the flat JSON line a report ends with, printed with `fmt`.
get() {
  local v
  v=$(grep -o "\"$2\":[-0-9.eE+]*" "$1" | tail -n1 | cut -d: -f2)
  if [ -z "$v" ]; then echo "n/a"; else awk -v v="$v" -v f="${3:-%.1f}" 'BEGIN {printf f, v}'; fi
}
verdict() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {
  if (v == "n/a") { print "n/a"; exit }
  ok = (op == "<=") ? (v + 0 <= t) : (op == "<") ? (v + 0 < t) : (v + 0 >= t)
  print ok ? "met" : "missed" }'; }

t="$out/transport.txt"; b="$out/backend.txt"; bp="$out/backend-pinned.txt"
p50r=$(get "$t" p50_ratio %.2f); p99r=$(get "$t" p99_ratio %.2f)
tokior=$(get "$t" tokio_floor_ratio %.2f)
noder=$(get "$t" sidecar_vs_node_rps %.2f)
gate=$(awk -F'|' '/gate overhead/ {gsub(/ /, "", $3); print $3}' "$out/gate.txt")
first=$(get "$t" sidecar_first_response_ms %.2f)
idle=$(awk -v kb="$(get "$t" sidecar_idle_rss_kb %d)" 'BEGIN {printf "%.1f", kb / 1024}')
loaded=$(awk -v kb="$(get "$b" loaded_rss_kb %d)" 'BEGIN {printf "%.1f", kb / 1024}')
gate_us=$(awk -v ns="${gate:-n/a}" 'BEGIN {if (ns == "n/a") print "n/a"; else printf "%.3f", ns / 1000}')
rt() { # backend row: file
  echo "$(get "$1" sidecar_p50_us) us (p99 $(get "$1" sidecar_p99_us)) vs direct on a current-thread runtime $(get "$1" direct_current_p50_us) us: **$(get "$1" ratio_current_p50 %.2f)x** ($(verdict "$(get "$1" ratio_current_p50 %.3f)" '<=' 1.4)); vs direct on a multi-thread runtime $(get "$1" direct_p50_us) us: $(get "$1" ratio_p50 %.2f)x ($(verdict "$(get "$1" ratio_p50 %.3f)" '<=' 1.2)); core_ping $(get "$1" ping_p50_us) us"
}
brt() { # baseline backend row: file
  echo "$(get "$1" baseline_p50_us) us vs direct on a current-thread runtime: $(get "$1" baseline_ratio_current_p50 %.2f)x; this build / baseline: **$(get "$1" sidecar_vs_baseline_p50 %.2f)x** (core_ping $(get "$1" sidecar_vs_baseline_ping_p50 %.2f)x)"
}

# The shipped binary's size, when scripts/dist.sh has built it (it is not built here: fat LTO
# takes minutes).
dist_bin="dist/core-sidecar-$(rustc -vV | sed -n 's/^host: //p')"
if [ -f "$dist_bin" ]; then
  dist_mb=$(awk -v b="$(wc -c < "$dist_bin")" 'BEGIN {printf "%.2f", b / 1000000}')
  dist_row="$dist_mb MB (\`$dist_bin\`) | <= 8 MB | $(verdict "$dist_mb" '<=' 8)"
else
  dist_row="n/a: run scripts/dist.sh first | <= 8 MB | n/a"
fi

cpu=$( (lscpu 2>/dev/null || true) | sed -n 's/^Model name: *//p' | head -n1)
mode="full run"; [ "$quick" = 1 ] && mode="quick run: rough figures"
cat <<TABLE

core-sidecar benchmarks: $(date -u '+%Y-%m-%d %H:%M UTC'), ${cpu:-unknown CPU}, $(nproc) CPU(s), $(uname -sr) (\`scripts/bench.sh\`, $mode)

| figure | measured | target | |
|---|---|---|---|
| core_ping round trip p50, pinned | $(get "$t" sidecar_p50_us) us; echo floor $(get "$t" floor_p50_us) us: **${p50r}x** | <= 1.1x floor | $(verdict "$p50r" '<=' 1.1) |
| the same echo on one tokio thread (the sidecar's design, no JSON-RPC), pinned | $(get "$t" tokio_floor_p50_us) us; echo floor $(get "$t" floor2_p50_us) us: **${tokior}x** | | |
| core_ping round trip p99, pinned | $(get "$t" sidecar_p99_us) us; echo floor $(get "$t" floor_p99_us) us: **${p99r}x** | <= 3x floor | $(verdict "$p99r" '<=' 3) |
| pipelined throughput, $(get "$t" inflight %d) in flight, pinned | $(get "$t" sidecar_rps %.0f) req/s; floor $(get "$t" floor_rps %.0f), Node json-rpc-2.0 $(get "$t" node_rps %.0f): **${noder}x Node** | >= 1.5x Node | $(verdict "$noder" '>=' 1.5) |
| session gate overhead (cached session) | ${gate:-n/a} ns per call | < 2 us | $(verdict "$gate_us" '<' 2) |
| backend round trip p50 (composio_list_connections), unpinned | $(rt "$b") | <= 1.4x direct current-thread, <= 1.2x direct multi-thread | see the two ratios |
| the same, pinned | $(rt "$bp") | <= 1.4x direct current-thread, <= 1.2x direct multi-thread | see the two ratios |
| spawn to first response (median) | ${first} ms | <= 20 ms | $(verdict "$first" '<=' 20) |
| idle RSS (after one ping) | ${idle} MB | < 15 MB | $(verdict "$idle" '<' 15) |
| loaded RSS (after the backend run, unpinned) | ${loaded} MB | | |
| shipped binary (scripts/dist.sh, stripped) | $dist_row |
TABLE
if [ ${#baseline[@]} -gt 0 ]; then
  cat <<TABLE
| baseline (${baseline[1]}): core_ping p50 / p99, pinned | $(get "$t" baseline_p50_us) us / $(get "$t" baseline_p99_us) us: $(get "$t" baseline_p50_ratio %.2f)x / $(get "$t" baseline_p99_ratio %.2f)x floor | | |
| baseline: pipelined throughput, pinned | $(get "$t" baseline_rps %.0f) req/s: $(get "$t" baseline_vs_node_rps %.2f)x Node | | |
| baseline: backend round trip p50, unpinned | $(brt "$b") | | |
| baseline: the same, pinned | $(brt "$bp") | | |
TABLE
fi
