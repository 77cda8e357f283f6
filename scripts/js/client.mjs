#!/usr/bin/env node
// A minimal Node client for core-sidecar, as a desktop shell (Electron main process, a Tauri
// plugin's JS side, a CLI) would write it. No dependencies: node >= 18.
//
//   import { SidecarClient, RpcError } from './client.mjs';
//   const sidecar = SidecarClient.spawn('target/debug/core-sidecar');
//   sidecar.on('auth_state_changed', ({ event, reason, state }) => { ... });
//   const state = await sidecar.request('auth_get_state');
//   try { await sidecar.request('composio_list_toolkits'); }
//   catch (e) { if (e instanceof RpcError && e.kind === 'auth_expired') { /* sign in */ } }
//   await sidecar.close(); // EOF on stdin: the sidecar finishes what is in flight, exits 0
//
// The wire (docs/protocol.md, "Wire rules"): one JSON value per line on stdin/stdout,
// JSON-RPC 2.0, params by name. Responses may come out of order: each request gets its own
// id and a pending promise. Lines without an id are notifications from the sidecar, emitted
// as events named after their method (and as 'notification' with the whole message).
//
// Run as a script, it is a demo: node scripts/js/client.mjs [path/to/core-sidecar]
// (default: $CORE_SIDECAR_BIN, else target/debug/core-sidecar). It prints one line per step,
// `<what> <compact JSON>`, and exits with the sidecar's exit code.

import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const RESERVED_EVENTS = new Set(['error', 'exit', 'notification', 'protocol_error']);

/** A JSON-RPC error answered by the sidecar. `kind` is `data.kind` (schema/errors.json). */
export class RpcError extends Error {
  constructor(method, error) {
    super(`${method}: ${error.message} (${error.code})`);
    this.name = 'RpcError';
    this.method = method;
    this.code = error.code;
    this.data = error.data;
  }

  /** `auth_expired`, `rate_limited`, `backend`, `unavailable`, `storage`, ... */
  get kind() {
    return this.data?.kind;
  }

  get retryable() {
    return this.data?.retryable === true;
  }
}

export class SidecarClient extends EventEmitter {
  /**
   * Spawns the sidecar. `options.env` is its environment (default: this process's);
   * `options.stderr` is where its logs go: 'inherit' (default), 'ignore' or 'pipe'.
   */
  static spawn(bin, { args = [], env = process.env, stderr = 'inherit' } = {}) {
    const child = spawn(bin, args, { env, stdio: ['pipe', 'pipe', stderr] });
    return new SidecarClient(child);
  }

  /** Wraps an already spawned child process with piped stdin and stdout. */
  constructor(child) {
    super();
    this.child = child;
    this.nextId = 1;
    this.pending = new Map(); // id -> { method, resolve, reject }
    this.exitCode = undefined;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitCode = code ?? signal;
        this.failAll(new Error(`core-sidecar exited (${code ?? signal}) before answering`));
        this.emit('exit', code, signal);
        resolve(code ?? signal);
      });
    });
    child.once('error', (error) => {
      // Spawning failed (no such binary) or a pipe broke: nothing pending will be answered.
      this.failAll(error);
      if (this.listenerCount('error') > 0) this.emit('error', error);
    });
    // Writing to a sidecar that has exited fails asynchronously; the exit handler already
    // rejected what was pending.
    child.stdin.on('error', () => {});
    createInterface({ input: child.stdout, crlfDelay: Infinity }).on('line', (line) =>
      this.onLine(line),
    );
  }

  onLine(line) {
    if (line.trim() === '') return;
    let message;
    try {
      message = JSON.parse(line);
    } catch {
      this.emit('protocol_error', line);
      return;
    }
    for (const item of Array.isArray(message) ? message : [message]) this.onMessage(item);
  }

  onMessage(message) {
    if (message === null || typeof message !== 'object') return;
    if (typeof message.method === 'string' && !('id' in message)) {
      this.emit('notification', message);
      // Names this class emits itself are not re-emitted ('error' would even throw).
      if (!RESERVED_EVENTS.has(message.method)) this.emit(message.method, message.params);
      return;
    }
    const waiter = this.pending.get(message.id);
    if (!waiter) {
      // A response to nothing we sent (e.g. a parse error, whose id is null).
      this.emit('protocol_error', message);
      return;
    }
    this.pending.delete(message.id);
    if ('error' in message) waiter.reject(new RpcError(waiter.method, message.error));
    else waiter.resolve(message.result);
  }

  failAll(error) {
    for (const { reject } of this.pending.values()) reject(error);
    this.pending.clear();
  }

  write(message) {
    if (this.exitCode !== undefined || !this.child.stdin.writable) {
      throw new Error('core-sidecar is not running');
    }
    this.child.stdin.write(`${JSON.stringify(message)}\n`);
  }

  /** Calls `method` with named `params`; resolves with the result, rejects with RpcError. */
  request(method, params = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { method, resolve, reject });
      try {
        this.write({ jsonrpc: '2.0', id, method, params });
      } catch (error) {
        this.pending.delete(id);
        reject(error);
      }
    });
  }

  /** Sends a notification (no id, no answer, even on error). */
  notify(method, params = {}) {
    this.write({ jsonrpc: '2.0', method, params });
  }

  /** Resolves with the params of the next notification `method` (rejects after `ms`). */
  next(method, ms = 10_000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off(method, onEvent);
        reject(new Error(`no ${method} within ${ms} ms`));
      }, ms);
      const onEvent = (params) => {
        clearTimeout(timer);
        resolve(params);
      };
      this.once(method, onEvent);
    });
  }

  /** Closes stdin (EOF: the sidecar answers what is in flight, then exits); resolves with the exit code. */
  close() {
    this.child.stdin.end();
    return this.exited;
  }
}

async function demo() {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const bin =
    process.argv[2] ||
    process.env.CORE_SIDECAR_BIN ||
    path.resolve(here, '..', '..', 'target', 'debug', 'core-sidecar');
  const show = (what, value) => console.log(`${what} ${JSON.stringify(value)}`);

  const sidecar = SidecarClient.spawn(bin);
  sidecar.on('error', (error) => {
    console.error(`cannot run ${bin}: ${error.message}`);
    process.exit(1);
  });
  sidecar.on('notification', ({ method, params }) => show(`notification ${method}`, params));

  show('core_ping', await sidecar.request('core_ping'));
  show('core_version', await sidecar.request('core_version'));
  show('auth_get_state', await sidecar.request('auth_get_state'));

  // A fake session, shaped as supabase-js's Session. The sidecar never sends a token back.
  const signedIn = sidecar.next('auth_state_changed');
  const stored = await sidecar.request('auth_store_session', {
    access_token: 'demo-access-token-not-a-real-jwt',
    refresh_token: 'demo-refresh-token',
    expires_in: 3600,
    token_type: 'bearer',
    user: { id: 'demo-user', email: 'demo@example.com' },
  });
  show('auth_store_session', stored);
  await signedIn;
  show('auth_get_state', await sidecar.request('auth_get_state'));

  const signedOut = sidecar.next('auth_state_changed');
  show('auth_clear_session', await sidecar.request('auth_clear_session'));
  await signedOut;
  show('auth_get_state', await sidecar.request('auth_get_state'));

  // Signed out, a gated method fails with auth_expired (reason no_session): the shell would
  // show its sign-in. Without CORE_SIDECAR_BACKEND_URL it is `unavailable` instead.
  try {
    await sidecar.request('composio_list_toolkits');
    show('composio_list_toolkits', 'unexpected success');
  } catch (error) {
    if (!(error instanceof RpcError)) throw error;
    show('composio_list_toolkits error', { code: error.code, kind: error.kind, data: error.data });
  }

  const code = await sidecar.close();
  show('exit', code);
  process.exitCode = code === 0 ? 0 : 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  demo().catch((error) => {
    console.error(error);
    process.exit(1);
  });
}
