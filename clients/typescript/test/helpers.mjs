// Shared by the tests: the binary under test and a sidecar spawned in a clean environment.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { spawnSidecar } from '../dist/index.js';

export const PACKAGE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO = path.resolve(PACKAGE, '..', '..');

/** The binary: $CORE_SIDECAR_BIN, else target/debug (what `cargo build --bins` builds). */
export const BIN = process.env.CORE_SIDECAR_BIN || path.join(REPO, 'target', 'debug', 'core-sidecar');
assert.ok(existsSync(BIN), `no core-sidecar at ${BIN}: run \`cargo build --bins\` first (or set CORE_SIDECAR_BIN)`);

/** A fake JWT (`{"alg":"HS256"}.{"sub":"1"}`) and refresh token: they must never come back. */
export const FAKE_JWT = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl';
export const FAKE_REFRESH = 'rt-client-test-0123456789';

/**
 * The environment of a test sidecar: none of this process's CORE_SIDECAR_*, SENTRY_* or
 * RUST_LOG, the memory keyring, and `env`.
 */
export function cleanEnv(env = {}) {
  const out = {};
  for (const name of Object.keys(process.env)) {
    if (name.startsWith('CORE_SIDECAR_') || name.startsWith('SENTRY_') || name === 'RUST_LOG') out[name] = undefined;
  }
  return { ...out, CORE_SIDECAR_KEYRING: 'memory', ...env };
}

/** `cleanEnv(env)` laid over this process's environment, for a child of another kind (node). */
export function childEnv(env = {}) {
  const out = { ...process.env };
  for (const [name, value] of Object.entries(cleanEnv(env))) {
    if (value === undefined) delete out[name];
    else out[name] = value;
  }
  return out;
}

/** Spawns the binary under test; its stderr is kept in `stderr()`. */
export function spawnTest(env = {}, options = {}) {
  const sidecar = spawnSidecar({ path: BIN, env: cleanEnv(env), stderr: 'pipe', ...options });
  const chunks = [];
  sidecar.child.stderr?.on('data', (chunk) => chunks.push(chunk));
  sidecar.stderr = () => Buffer.concat(chunks).toString('utf8');
  return sidecar;
}
