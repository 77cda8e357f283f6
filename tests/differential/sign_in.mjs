#!/usr/bin/env node
// The sign-in scenarios of the differential suite (tests/it/differential.rs,
// `sign_in_requests_match_auth_js`), run by the reference client: @supabase/auth-js with
// flowType 'pkce', against the fake GoTrue the Rust test started for it.
//
// First line on stdin: { authUrl, apiKey }. Then one step per line, named and shaped as the
// sidecar's method and params: { method: "auth_sign_up", params: {...} }; each is answered
// with one line on stdout:
//   { ok: true, url?: string } | { ok: false, error: { name, status, code } },
//   plus events: [ "SIGNED_IN", ... ] (those the step caused; INITIAL_SESSION left out).
// Nothing it prints holds a token.

import { createInterface } from 'node:readline';
import { GoTrueClient } from '@supabase/auth-js';

function memoryStorage() {
  const items = new Map();
  return {
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
  return {
    name: error.name ?? 'Error',
    status: typeof error.status === 'number' ? error.status : null,
    code: typeof error.code === 'string' ? error.code : null,
  };
}

// The sidecar's params as auth-js's arguments.
async function call(client, method, p) {
  const contact = p.email !== undefined ? { email: p.email } : { phone: p.phone };
  switch (method) {
    case 'auth_sign_up':
      return client.signUp({
        ...contact,
        password: p.password,
        options: {
          data: p.data,
          emailRedirectTo: p.redirect_to,
          ...(p.phone !== undefined ? { channel: 'sms' } : {}),
        },
      });
    case 'auth_sign_in_with_password':
      return client.signInWithPassword({ ...contact, password: p.password });
    case 'auth_sign_in_with_otp':
      return client.signInWithOtp({
        ...contact,
        options: {
          shouldCreateUser: p.create_user,
          data: p.data,
          emailRedirectTo: p.redirect_to,
        },
      });
    case 'auth_verify_otp':
      return client.verifyOtp(
        p.token_hash !== undefined
          ? { token_hash: p.token_hash, type: p.type }
          : { ...contact, token: p.token, type: p.type },
      );
    case 'auth_sign_in_with_oauth':
      return client.signInWithOAuth({
        provider: p.provider,
        options: { redirectTo: p.redirect_to, scopes: p.scopes, queryParams: p.query_params },
      });
    case 'auth_exchange_code':
      return client.exchangeCodeForSession(p.auth_code);
    case 'auth_reset_password_for_email':
      return client.resetPasswordForEmail(p.email, { redirectTo: p.redirect_to });
    case 'auth_update_user': {
      const { redirect_to: emailRedirectTo, ...attributes } = p;
      return client.updateUser(attributes, { emailRedirectTo });
    }
    default:
      throw new Error(`unknown method ${method}`);
  }
}

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const first = await lines.next();
const { authUrl, apiKey } = JSON.parse(first.value);
const client = new GoTrueClient({
  url: authUrl,
  headers: { apikey: apiKey },
  storageKey: 'sb-differential-sign-in',
  storage: memoryStorage(),
  autoRefreshToken: false,
  persistSession: true,
  detectSessionInUrl: false,
  flowType: 'pkce',
});
await client.initialize();

let events = [];
client.onAuthStateChange((event) => {
  if (event !== 'INITIAL_SESSION') events.push(event);
});

for (let next = await lines.next(); !next.done; next = await lines.next()) {
  const { method, params } = JSON.parse(next.value);
  const { data, error } = await call(client, method, params);
  const answer = error
    ? { ok: false, error: describeError(error) }
    : { ok: true, ...(typeof data?.url === 'string' ? { url: data.url } : {}) };
  answer.events = events;
  events = [];
  await new Promise((resolve) => process.stdout.write(`${JSON.stringify(answer)}\n`, resolve));
}
process.exit(0);
