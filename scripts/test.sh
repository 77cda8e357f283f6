#!/usr/bin/env bash
# The project's whole check, as CI runs it (.ci/run) and as a developer runs it locally:
#
#   1. installs what is missing: Debian packages for the keyring test environment (dbus,
#      gnome-keyring, libsecret-tools, keyutils) and Node.js (nodejs, npm) via apt-get;
#      the rustfmt and clippy components via rustup;
#   2. cargo fmt --check, cargo clippy -D warnings;
#   3. npm ci in clients/typescript (the typed Node client: typescript and @types/node) and in
#      tests/differential (the @supabase/auth-js that tests/it/differential.rs runs beside the
#      binary);
#   4. cargo build --bins --examples, then the clients' tests against target/debug/core-sidecar
#      with the memory keyring: the TypeScript client (`npm test` in clients/typescript: tsc,
#      then node --test) and the Rust client (`cargo test -p core-sidecar-client`); each also
#      checks that its generated types are up to date with schema/openrpc.json;
#   5. cargo check of the library and binary for Windows (x86_64-pc-windows-gnu: the
#      Credential Manager code behind cfg; needs the rust target and the mingw-w64 C compiler
#      for ring's build script, both installed here). macOS is not checked: ring's build
#      script needs the macOS SDK (see README, "Platforms");
#   6. the whole Rust test suite (all targets, then doc tests) inside scripts/with-keyring.sh: a
#      private D-Bus session with an unlocked gnome-keyring Secret Service and a fresh keyutils
#      session keyring. The real-keyring tests are `#[ignore]`d (a plain `cargo test` reports
#      them as ignored, never as passed); `--include-ignored` runs them here, where an
#      unreachable keyring fails them;
#   7. the shipped binary (scripts/dist.sh: dist/core-sidecar-<triple>) built, and the
#      integration tests run again against it (CORE_SIDECAR_TEST_BIN), in the same keyring
#      environment.
#
# Usage: scripts/test.sh        (from anywhere; no arguments)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> [%3ds] %s\n' "$SECONDS" "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        note "need root (or sudo) to run: $*"
        return 1
    fi
}

step "checking tools"
packages=()
command -v dbus-run-session >/dev/null 2>&1 || packages+=(dbus)
command -v dbus-send >/dev/null 2>&1 || packages+=(dbus)
command -v gnome-keyring-daemon >/dev/null 2>&1 || packages+=(gnome-keyring)
command -v secret-tool >/dev/null 2>&1 || packages+=(libsecret-tools)
command -v keyctl >/dev/null 2>&1 || packages+=(keyutils)
command -v node >/dev/null 2>&1 || packages+=(nodejs npm)
command -v npm >/dev/null 2>&1 || packages+=(npm)
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || packages+=(gcc-mingw-w64-x86-64)
if [ "${#packages[@]}" -gt 0 ]; then
    mapfile -t packages < <(printf '%s\n' "${packages[@]}" | sort -u)
    note "installing ${packages[*]} (apt-get)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${packages[@]}" >&2
else
    note "keyring tools and node present"
fi
for component in rustfmt clippy; do
    probe=(cargo fmt --version)
    [ "$component" = clippy ] && probe=(cargo clippy --version)
    if ! "${probe[@]}" >/dev/null 2>&1; then
        note "installing the $component component (rustup)"
        rustup component add "$component"
    fi
done
windows=x86_64-pc-windows-gnu
if ! rustup target list --installed | grep -qx "$windows"; then
    note "installing the $windows target (rustup)"
    rustup target add "$windows"
fi
note "$(cargo --version); $(rustc --version)"
note "node $(node --version); npm $(npm --version)"

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings (and the shipped build's features)"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --no-default-features --lib --bins -- -D warnings

step "cargo check --target $windows --lib --bins (the Windows keyring code)"
cargo check --target "$windows" --lib --bins

step "npm ci (clients/typescript: the typed Node client)"
(cd clients/typescript && npm ci --no-audit --no-fund)
step "npm ci (tests/differential: the pinned @supabase/auth-js the differential suite runs)"
(cd tests/differential && npm ci --no-audit --no-fund)

# The demo test runs the example programs themselves: `cargo test` builds examples only as
# test harnesses, so build the runnable ones first.
step "cargo build --bins --examples"
cargo build --bins --examples

# Builds the client's dist/ too, which tests/it/js_client.rs runs below.
step "npm test (clients/typescript, against target/debug/core-sidecar)"
(export CORE_SIDECAR_BIN="$PWD/target/debug/core-sidecar" && cd clients/typescript && npm test)

step "cargo test -p core-sidecar-client (the Rust client, against target/debug/core-sidecar)"
CORE_SIDECAR_BIN="$PWD/target/debug/core-sidecar" cargo test -p core-sidecar-client

step "cargo test --all-targets -- --include-ignored, then cargo test --doc (inside scripts/with-keyring.sh)"
scripts/with-keyring.sh bash -c \
    'cargo test --all-targets --no-fail-fast -- --include-ignored && cargo test --doc'

step "scripts/dist.sh, then the integration tests against the shipped binary"
scripts/dist.sh
dist_bin="dist/core-sidecar-$(rustc -vV | sed -n 's/^host: //p')"
scripts/with-keyring.sh env CORE_SIDECAR_TEST_BIN="$dist_bin" \
    cargo test --test it --no-fail-fast -- --include-ignored

step "all checks passed"
