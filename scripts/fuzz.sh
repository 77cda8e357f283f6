#!/usr/bin/env bash
# Fuzzes the transport with cargo-fuzz (libFuzzer): every target in fuzz/fuzz_targets, each
# for SECONDS (default 60), then prints the executions per target.
#
#   scripts/fuzz.sh [SECONDS]          e.g. scripts/fuzz.sh 300
#
# Only the stable toolchain is needed: RUSTC_BOOTSTRAP=1 lets it take cargo-fuzz's nightly
# flags (sanitizer coverage, AddressSanitizer). cargo-fuzz is installed when missing.
# Corpora grow in fuzz/corpus/<target> (gitignored), seeded from fuzz/seeds/<target>; a
# crash leaves its input in fuzz/artifacts/<target> and makes this script exit non-zero.
# Reproduce one with: RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <artifact>
#
# Environment: FUZZ_TARGETS="a b" runs only those targets; FUZZ_KEEP_GOING=1 goes on after a
# crash (libFuzzer fork mode, -ignore_crashes) so one known bug does not end the run;
# FUZZ_JOBS (default 1) is the number of fork-mode workers.
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS per target, default 60]" >&2
    exit 2
fi
jobs="${FUZZ_JOBS:-1}"

cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"

echo "== building: $(echo $targets)" >&2
cargo fuzz build

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
failed=()
summary=()
for target in $targets; do
    corpus="fuzz/corpus/$target"
    mkdir -p "$corpus"
    seeds=()
    [[ -d "fuzz/seeds/$target" ]] && seeds=("fuzz/seeds/$target")
    args=(-max_total_time="$seconds" -print_final_stats=1)
    [[ -f "fuzz/$target.dict" ]] && args+=(-dict="fuzz/$target.dict")
    if [[ "${FUZZ_KEEP_GOING:-0}" == 1 ]]; then
        args+=(-fork="$jobs" -ignore_crashes=1)
    elif [[ "$jobs" -gt 1 ]]; then
        args+=(-fork="$jobs")
    fi
    artifacts="fuzz/artifacts/$target"
    mkdir -p "$artifacts"
    touch "$logs/$target.start"
    echo "== $target: ${seconds}s" >&2
    log="$logs/$target.log"
    status=0
    cargo fuzz run "$target" "$corpus" "${seeds[@]}" -- "${args[@]}" >"$log" 2>&1 || status=$?
    # libFuzzer's final stats; in fork mode the last status line carries the count.
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    if [[ -z "$runs" ]]; then
        runs="$(sed -n 's/^#\([0-9]*\).*/\1/p' "$log" | tail -n 1)"
    fi
    per_second=$(( ${runs:-0} / seconds ))
    crashes="$(find "$artifacts" -type f -newer "$logs/$target.start" | wc -l)"
    if [[ "$status" -ne 0 || "$crashes" -gt 0 ]]; then
        failed+=("$target")
        grep -v '^"' "$log" | grep -A 12 -m 3 'panicked at\|ERROR: libFuzzer\|ERROR: AddressSanitizer' >&2 || true
        summary+=("$target: ${runs:-?} executions in ${seconds}s (~${per_second}/s), $crashes new crash input(s) in $artifacts (exit $status)")
    else
        summary+=("$target: ${runs:-?} executions in ${seconds}s (~${per_second}/s), corpus $(find "$corpus" -type f | wc -l) inputs, no crash")
    fi
done

echo
printf '%s\n' "${summary[@]}"
if [[ "${#failed[@]}" -gt 0 ]]; then
    echo "crashes in: ${failed[*]}" >&2
    exit 1
fi
