#!/usr/bin/env bash
# Runs a command inside a private, throw-away keyring environment:
#
#   - a private D-Bus session bus (dbus-run-session),
#   - a gnome-keyring Secret Service on it, unlocked with a known password, whose keyrings live
#     in a temporary directory (never the user's real ~/.local/share/keyrings),
#   - a fresh anonymous keyutils session keyring (keyctl session -).
#
# The real-keyring tests are `#[ignore]`d; pass `--include-ignored` (or `--ignored`) to run
# them here, where an unreachable keyring fails them.
#
# Usage: scripts/with-keyring.sh <command> [args...]
#   scripts/with-keyring.sh cargo test session::store -- --include-ignored
#   scripts/with-keyring.sh bash -c 'secret-tool store --label=x service a username b <<< hi'
#
# Missing packages (dbus, gnome-keyring, libsecret-tools, keyutils) are installed with apt-get.
# Progress goes to stderr; the command's stdout is left untouched.
set -euo pipefail

log() { printf 'with-keyring: %s\n' "$*" >&2; }

if [ "$#" -eq 0 ]; then
    sed -n '2,17p' "$0" >&2
    exit 2
fi

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root (or sudo) to run: $*"
        return 1
    fi
}

ensure_packages() {
    local missing=()
    command -v dbus-run-session >/dev/null 2>&1 || missing+=(dbus)
    command -v dbus-send >/dev/null 2>&1 || missing+=(dbus)
    command -v gnome-keyring-daemon >/dev/null 2>&1 || missing+=(gnome-keyring)
    command -v secret-tool >/dev/null 2>&1 || missing+=(libsecret-tools)
    command -v keyctl >/dev/null 2>&1 || missing+=(keyutils)
    if [ "${#missing[@]}" -gt 0 ]; then
        # Deduplicate (dbus may be listed twice).
        mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
        log "installing ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >&2
    fi
}

if [ "${CORE_SIDECAR_WITH_KEYRING_STAGE:-}" != "inside-bus" ]; then
    ensure_packages
    log "starting a private D-Bus session"
    # Re-enter this script on the private bus. The dbus-daemon may complain on stderr that it
    # cannot raise its fd limit in a container: harmless.
    CORE_SIDECAR_WITH_KEYRING_STAGE=inside-bus exec dbus-run-session -- bash "$0" "$@"
fi
unset CORE_SIDECAR_WITH_KEYRING_STAGE

# ---- on the private bus from here on ----

workdir="$(mktemp -d "${TMPDIR:-/tmp}/core-sidecar-keyring.XXXXXX")"
daemon_pid=""
cleanup() {
    if [ -n "$daemon_pid" ]; then
        kill "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT

mkdir -m 700 "$workdir/run" "$workdir/data"
# A throw-away keyring: its password protects nothing real.
password="core-sidecar-test"

log "starting gnome-keyring-daemon (secrets component, unlocked, data in $workdir)"
# --unlock reads the password on stdin and creates the "login" keyring with it when missing; a
# new login keyring becomes the default collection, so writes need no prompt. Its own
# XDG_RUNTIME_DIR/XDG_DATA_HOME keep it away from any real desktop keyring.
printf '%s' "$password" |
    XDG_RUNTIME_DIR="$workdir/run" XDG_DATA_HOME="$workdir/data" \
        gnome-keyring-daemon --foreground --unlock --components=secrets \
        >"$workdir/daemon.log" 2>&1 &
daemon_pid=$!

secrets_on_bus() {
    dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
        org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null |
        grep -q 'boolean true'
}

# Bounded wait (10 s) for the daemon to own org.freedesktop.secrets.
for _ in $(seq 1 100); do
    secrets_on_bus && break
    if ! kill -0 "$daemon_pid" 2>/dev/null; then
        log "gnome-keyring-daemon exited early:"
        cat "$workdir/daemon.log" >&2
        exit 1
    fi
    sleep 0.1
done
if ! secrets_on_bus; then
    log "gnome-keyring-daemon did not register org.freedesktop.secrets within 10 s:"
    cat "$workdir/daemon.log" >&2
    exit 1
fi

# Prove that the default collection takes writes without a prompt.
probe="probe-$$-$RANDOM"
if ! printf '%s' "$probe" | timeout 10 secret-tool store --label="with-keyring probe" \
    service core-sidecar-with-keyring username probe; then
    log "secret-tool store failed: the default collection is missing or locked"
    cat "$workdir/daemon.log" >&2
    exit 1
fi
if [ "$(timeout 10 secret-tool lookup service core-sidecar-with-keyring username probe)" != "$probe" ]; then
    log "secret-tool lookup did not return the probe secret"
    exit 1
fi
timeout 10 secret-tool clear service core-sidecar-with-keyring username probe
log "Secret Service ready (default collection unlocked, write/read checked)"

log "running in a fresh keyutils session keyring: $*"
status=0
keyctl session - "$@" || status=$?
exit "$status"
