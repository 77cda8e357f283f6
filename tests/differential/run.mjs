#!/usr/bin/env node
// One scenario of the differential suite (tests/it/differential.rs), run by the reference
// client: @supabase/auth-js (the version pinned in package-lock.json), against the fake
// GoTrue the Rust test started for it.
//
// Input, one JSON object on stdin:
//   { authUrl, backendUrl, apiKey,
//     session: { access_token, refresh_token, expires_at, token_type, user } | null,
//     action: { kind: "refresh" | "get_user" | "get_session" | "sign_out" | "call",
//               scope?: "local" | "global" | "others", concurrent?: N } }
// The session is put into the client's storage before the client starts, as if stored by
// an earlier run; the client runs with autoRefreshToken off, so only the action talks to
// the server (the sidecar's ticker never fires within a scenario either).
//
// `call` is what an app built on auth-js does for a product-backend call: getSession(),
// GET {backendUrl}/auth/me with the access token, and on a 401 one refreshSession() and
// one retry.
//
// Output, one JSON line on stdout:
//   { results: [ { ok: true } | { ok: false, error: { name, status, code } } ],
//     events: [ "TOKEN_REFRESHED", "SIGNED_OUT", ... ],   // INITIAL_SESSION left out
//     storedAccessToken: string | null }
// The stored token is for the Rust side to label; it never prints it.

import { GoTrueClient } from '@supabase/auth-js';

const STORAGE_KEY = 'sb-differential-auth-token';

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

function memoryStorage(initial) {
  const items = new Map(Object.entries(initial));
  return {
    items,
    getItem: (key) => (items.has(key) ? items.get(key) : null),
    setItem: (key, value) => {
      items.set(key, value);
    },
    removeItem: (key) => {
      items.delete(key);
    },
  };
}

function describeError(error) {
  if (!error) return null;
  return {
    name: error.name ?? 'Error',
    status: typeof error.status === 'number' ? error.status : null,
    code: typeof error.code === 'string' ? error.code : null,
  };
}

function outcome({ error }) {
  return error ? { ok: false, error: describeError(error) } : { ok: true };
}

async function backendCall(client, backendUrl) {
  const get = (token) =>
    fetch(`${backendUrl}/auth/me`, { headers: { authorization: `Bearer ${token}` } });
  const { data, error } = await client.getSession();
  if (error) return { ok: false, error: describeError(error) };
  if (!data.session) return { ok: false, error: { name: 'AuthSessionMissingError', status: null, code: null } };
  let response = await get(data.session.access_token);
  if (response.status === 401) {
    const refreshed = await client.refreshSession();
    if (refreshed.error) return outcome(refreshed);
    response = await get(refreshed.data.session.access_token);
  }
  if (response.ok) return { ok: true };
  return { ok: false, error: { name: 'BackendError', status: response.status, code: null } };
}

async function run(client, input) {
  const { action } = input;
  switch (action.kind) {
    case 'refresh':
      return outcome(await client.refreshSession());
    case 'get_user':
      return outcome(await client.getUser());
    case 'get_session':
      return outcome(await client.getSession());
    case 'sign_out':
      return outcome(await client.signOut({ scope: action.scope }));
    case 'call':
      return backendCall(client, input.backendUrl);
    default:
      throw new Error(`unknown action ${action.kind}`);
  }
}

const input = await readStdin();
const storage = memoryStorage(
  input.session ? { [STORAGE_KEY]: JSON.stringify(input.session) } : {},
);
const client = new GoTrueClient({
  url: input.authUrl,
  headers: { apikey: input.apiKey },
  storageKey: STORAGE_KEY,
  storage,
  autoRefreshToken: false,
  persistSession: true,
  detectSessionInUrl: false,
});
await client.initialize();

const events = [];
client.onAuthStateChange((event) => {
  if (event !== 'INITIAL_SESSION') events.push(event);
});

const n = input.action.concurrent ?? 1;
const results = await Promise.all(Array.from({ length: n }, () => run(client, input)));
const stored = storage.getItem(STORAGE_KEY);
const storedAccessToken = stored ? JSON.parse(stored).access_token ?? null : null;

process.stdout.write(`${JSON.stringify({ results, events, storedAccessToken })}\n`, () =>
  process.exit(0),
);
