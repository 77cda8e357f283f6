#!/usr/bin/env bash
# Builds the binary a shell ships: the `dist` profile (Cargo.toml: release + fat LTO, one
# codegen unit, opt-level "s", stripped, panic = unwind), copied to
# dist/core-sidecar-<target-triple>[.exe], the name Tauri's `externalBin` looks for. Prints
# the path and the size.
#
# usage: scripts/dist.sh [--target TRIPLE]
#   --target TRIPLE  cross-compile (the target must be installed: rustup target add TRIPLE,
#                    plus a linker for it); default: this machine's triple (`rustc -vV`)
set -euo pipefail
cd "$(dirname "$0")/.."

target=""
while [ $# -gt 0 ]; do
  case "$1" in
    --target)
      [ $# -ge 2 ] || { echo "--target needs a triple" >&2; exit 2; }
      target=$2; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown flag: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

host=$(rustc -vV | sed -n 's/^host: //p')
triple=${target:-$host}
args=(--profile dist --bin core-sidecar --locked --no-default-features)
built="${CARGO_TARGET_DIR:-target}/dist"
if [ -n "$target" ]; then
  args+=(--target "$target")
  built="${CARGO_TARGET_DIR:-target}/$target/dist"
fi
exe=""
case "$triple" in *windows*) exe=".exe" ;; esac

echo "building core-sidecar for $triple (cargo build ${args[*]})" >&2
cargo build "${args[@]}"

mkdir -p dist
out="dist/core-sidecar-$triple$exe"
cp "$built/core-sidecar$exe" "$out"
bytes=$(wc -c < "$out" | tr -d ' ')
echo "$out: $bytes bytes ($(awk -v b="$bytes" 'BEGIN {printf "%.2f MB", b / 1000000}'))"
