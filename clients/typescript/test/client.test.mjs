// The client against the real binary (built by `cargo build --bins`), with the memory keyring.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';

import {
  ERROR_CODES,
  METHODS,
  SidecarError,
  SidecarExitedError,
  resolveSidecarPath,
  spawnSidecar,
} from '../dist/index.js';
import { FAKE_JWT, FAKE_REFRESH, REPO, cleanEnv, spawnTest } from './helpers.mjs';

// A backend URL nothing listens on: signed out, a gated call answers auth_expired before any
// connection is tried.
const CLOSED_PORT = 'http://127.0.0.1:9';

test('core_ping and core_version answer their typed results; close() resolves 0', async () => {
  const sidecar = spawnTest();
  assert.deepEqual(await sidecar.request('core_ping'), { pong: true });
  const version = await sidecar.request('core_version');
  assert.equal(version.name, 'core-sidecar');
  assert.equal(version.protocol, 1);
  assert.match(version.version, /^\d+\.\d+\.\d+/);
  const state = await sidecar.request('auth_get_state');
  assert.deepEqual(state, { isAuthenticated: false, userId: null, user: null, expiresAt: null, persistent: false });
  assert.equal(await sidecar.close(), 0);
  assert.equal(sidecar.pendingCount, 0);
});

test('rpc.discover returns the contract the types were generated from', async () => {
  const sidecar = spawnTest();
  const doc = await sidecar.request('rpc.discover');
  assert.equal(doc.openrpc, '1.3.2');
  assert.deepEqual(
    doc.methods.map((m) => m.name),
    Object.keys(METHODS),
    'the binary and src/generated.ts list the same methods: rerun `npm run gen`',
  );
  assert.equal(await sidecar.close(), 0);
});

test('a gated call without a session rejects with SidecarError kind auth_expired', async () => {
  const sidecar = spawnTest({ CORE_SIDECAR_BACKEND_URL: CLOSED_PORT });
  const error = await sidecar.request('composio_list_toolkits').then(
    () => assert.fail('resolved'),
    (e) => e,
  );
  assert.ok(error instanceof SidecarError, String(error));
  assert.equal(error.code, -32001);
  assert.equal(error.code, ERROR_CODES.auth_expired);
  assert.equal(error.kind, 'auth_expired');
  assert.equal(error.method, 'composio_list_toolkits');
  assert.equal(error.retryable, false);
  assert.deepEqual(error.data, { kind: 'auth_expired', reason: 'no_session', retryable: false });
  assert.match(error.message, /^composio_list_toolkits: /);

  // Bad params: invalid_params naming the field, before any session check.
  const bad = await sidecar.requestUntyped('composio_authorize', { toolkit: 7 }).catch((e) => e);
  assert.ok(bad instanceof SidecarError);
  assert.equal(bad.kind, 'invalid_params');
  assert.equal(bad.data?.field, 'toolkit');

  // An unknown method: a transport error, no data, no kind.
  const unknown = await sidecar.requestUntyped('no_such_method').catch((e) => e);
  assert.ok(unknown instanceof SidecarError);
  assert.equal(unknown.code, -32601);
  assert.equal(unknown.kind, undefined);
  assert.equal(await sidecar.close(), 0);
});

test('auth_state_changed: INITIAL_SESSION first, SIGNED_IN on auth_store_session, SIGNED_OUT on clear', async () => {
  const sidecar = spawnTest();
  const events = [];
  sidecar.on('auth_state_changed', (params) => events.push(params));
  const notifications = [];
  sidecar.on('notification', (method, params) => notifications.push([method, params]));

  const initial = await sidecar.next('auth_state_changed', { accept: (p) => p.event === 'INITIAL_SESSION' });
  assert.equal(initial.state.isAuthenticated, false);

  const signedIn = sidecar.next('auth_state_changed', { accept: (p) => p.event === 'SIGNED_IN' });
  const stored = await sidecar.request('auth_store_session', {
    access_token: FAKE_JWT,
    refresh_token: FAKE_REFRESH,
    expires_in: 3600,
    token_type: 'bearer',
    user: { id: 'user-1', email: 'user@example.com' },
  });
  assert.equal(stored.isAuthenticated, true);
  assert.equal(stored.userId, 'user-1');
  assert.equal(stored.persistent, false);
  const event = await signedIn;
  assert.equal(event.state.userId, 'user-1');
  assert.equal(event.reason, undefined);

  const signedOut = sidecar.next('auth_state_changed', { accept: (p) => p.event === 'SIGNED_OUT' });
  assert.deepEqual(await sidecar.request('auth_clear_session'), { removed: true });
  assert.equal((await signedOut).reason, 'signed_out');
  assert.equal(await sidecar.close(), 0);

  assert.deepEqual(
    events.map((e) => e.event),
    ['INITIAL_SESSION', 'SIGNED_IN', 'SIGNED_OUT'],
  );
  assert.deepEqual(
    notifications.map(([method, params]) => [method, params.event]),
    events.map((e) => ['auth_state_changed', e.event]),
  );
  const stderr = sidecar.stderr();
  for (const token of [FAKE_JWT, FAKE_REFRESH]) assert.ok(!stderr.includes(token), 'a token reached the logs');
  assert.ok(!JSON.stringify(events).includes(FAKE_JWT));
});

test('responses out of order each settle their own request; pending ones reject when the process is killed', async () => {
  const sidecar = spawnTest({ CORE_SIDECAR_TEST_HOOKS: '1' });
  // Sent first, answered in a minute: still pending when everything after it is answered.
  const slow = sidecar.requestUntyped('core_test_sleep', { ms: 60_000 });
  const slowOutcome = slow.then(
    () => 'resolved',
    (e) => e,
  );
  const [pings, version, state, bad] = await Promise.all([
    Promise.all(Array.from({ length: 20 }, () => sidecar.request('core_ping'))),
    sidecar.request('core_version'),
    sidecar.request('auth_get_state'),
    sidecar.request('auth_sign_out', { scope: 'nowhere' }).catch((e) => e),
  ]);
  assert.ok(pings.every((p) => p.pong === true));
  assert.equal(version.name, 'core-sidecar');
  assert.equal(state.isAuthenticated, false);
  assert.ok(bad instanceof SidecarError && bad.kind === 'invalid_params', String(bad));
  assert.equal(sidecar.pendingCount, 1, 'only the sleep is pending');

  const exit = new Promise((resolve) => sidecar.on('exit', (code, signal) => resolve({ code, signal })));
  sidecar.kill('SIGKILL');
  const error = await slowOutcome;
  assert.ok(error instanceof SidecarExitedError, String(error));
  assert.equal(error.signal, 'SIGKILL');
  assert.match(error.message, /killed by SIGKILL before answering core_test_sleep/);
  assert.deepEqual(await exit, { code: null, signal: 'SIGKILL' });
  assert.equal(await sidecar.close(), null);
  assert.equal(sidecar.pendingCount, 0);

  // After the end, a request is refused at once.
  const late = await sidecar.request('core_ping').catch((e) => e);
  assert.ok(late instanceof SidecarExitedError);
});

test('an aborted signal cancels the pending request: the sidecar answers it -32800 cancelled', async () => {
  const sidecar = spawnTest({ CORE_SIDECAR_TEST_HOOKS: '1' });
  const controller = new AbortController();
  const slow = sidecar.requestUntyped('core_test_sleep', { ms: 60_000 }, { signal: controller.signal });
  const outcome = slow.catch((e) => e);
  // Answered after the sleep was read: the cancel goes to a request the sidecar holds.
  await sidecar.request('core_ping');
  assert.equal(sidecar.pendingCount, 1);
  controller.abort();
  const error = await outcome;
  assert.ok(error instanceof SidecarError, String(error));
  assert.equal(error.code, -32800);
  assert.equal(error.kind, 'cancelled');
  assert.equal(sidecar.pendingCount, 0);

  // Aborted before it is sent: nothing goes out, the promise rejects with the reason.
  const early = new AbortController();
  early.abort(new Error('the user left'));
  const refused = await sidecar.request('core_ping', undefined, { signal: early.signal }).catch((e) => e);
  assert.equal(refused.message, 'the user left');
  // A typed request with options, answered before any abort: the signal is let go.
  const late = new AbortController();
  assert.equal((await sidecar.request('auth_get_state', {}, { signal: late.signal })).isAuthenticated, false);
  late.abort();
  assert.equal((await sidecar.request('core_ping')).pong, true);
  assert.equal(await sidecar.close(), 0);
});

test('a sidecar that exits by itself rejects what is pending with its exit code', async () => {
  // A bad URL is a configuration error: exit 2 before anything is read.
  const sidecar = spawnTest({ CORE_SIDECAR_BACKEND_URL: 'ftp://example.invalid' });
  const error = await sidecar.request('core_ping').catch((e) => e);
  assert.ok(error instanceof SidecarExitedError, String(error));
  assert.equal(error.exitCode, 2);
  assert.match(error.message, /exited with code 2 before answering core_ping/);
  assert.equal(await sidecar.close(), 2);
  assert.match(sidecar.stderr(), /CORE_SIDECAR_BACKEND_URL|backend/i);
});

test('an "id": null reply (a line the sidecar could not parse) is a protocol_error event, nothing else', async () => {
  const sidecar = spawnTest();
  const events = [];
  sidecar.on('protocol_error', (event) => events.push(event));
  const ping = sidecar.request('core_ping');
  sidecar.writeLine('this is not JSON');
  // An answer to an id this client never sent is one too.
  sidecar.writeLine(JSON.stringify({ jsonrpc: '2.0', id: 424242, method: 'core_ping' }));
  assert.deepEqual(await ping, { pong: true }, 'the pending request still gets its own answer');
  assert.deepEqual(await sidecar.request('core_ping'), { pong: true });
  assert.equal(await sidecar.close(), 0);

  assert.equal(events.length, 2, JSON.stringify(events));
  const parse = events.find((e) => e.message?.id === null);
  assert.ok(parse, JSON.stringify(events));
  assert.ok(parse.error instanceof SidecarError);
  assert.equal(parse.error.code, -32700);
  assert.equal(parse.error.kind, undefined);
  const stray = events.find((e) => e.message?.id === 424242);
  assert.deepEqual(stray?.message?.result, { pong: true });
});

test('a binary that cannot be started rejects requests and close(), and throws nothing', async () => {
  const missing = path.join(REPO, 'target', 'no-such-dir', 'core-sidecar');
  const sidecar = spawnSidecar({ path: missing, env: cleanEnv(), stderr: 'ignore' });
  let exited = false;
  sidecar.on('exit', () => (exited = true));
  const error = await sidecar.request('core_ping').catch((e) => e);
  assert.ok(error instanceof SidecarExitedError, String(error));
  assert.ok(error.message.includes(missing), error.message);
  assert.match(error.message, /ENOENT/);
  await assert.rejects(sidecar.close(), SidecarExitedError);
  assert.ok(exited);
});

test('the binary: path, then CORE_SIDECAR_BIN, then target/release, target/debug, then PATH', () => {
  assert.deepEqual(resolveSidecarPath('/opt/app/core-sidecar', { CORE_SIDECAR_BIN: '/x' }), {
    path: '/opt/app/core-sidecar',
    source: 'path',
  });
  assert.deepEqual(resolveSidecarPath(undefined, { CORE_SIDECAR_BIN: '/x/core-sidecar' }), {
    path: '/x/core-sidecar',
    source: 'CORE_SIDECAR_BIN',
  });
  // From this checkout: release when built, else debug (the tests run after `cargo build --bins`).
  const found = resolveSidecarPath(undefined, {});
  assert.ok(['target/release', 'target/debug'].includes(found.source), JSON.stringify(found));
  assert.equal(found.path, path.join(REPO, ...found.source.split('/'), 'core-sidecar'));
});
