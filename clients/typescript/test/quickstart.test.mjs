// examples/quickstart.mjs, the README's Node example, runs as printed against the binary.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { BIN, PACKAGE, REPO, childEnv } from './helpers.mjs';

const QUICKSTART = path.join(PACKAGE, 'examples', 'quickstart.mjs');

test('examples/quickstart.mjs runs to exit 0, signed out', () => {
  const env = childEnv({ CORE_SIDECAR_BIN: BIN, CORE_SIDECAR_BACKEND_URL: 'http://127.0.0.1:9', RUST_LOG: 'warn' });
  const run = spawnSync(process.execPath, [QUICKSTART], {
    cwd: PACKAGE,
    env,
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.equal(run.status, 0, `stdout:\n${run.stdout}\nstderr:\n${run.stderr}`);
  const steps = run.stdout.trim().split('\n').map((line) => {
    const at = line.indexOf(' ');
    return [line.slice(0, at), line.slice(at + 1)];
  });
  const labels = steps.map(([label]) => label).filter((l) => l !== 'auth_state_changed');
  assert.deepEqual(labels, ['core_ping', 'auth_get_state', 'composio_list_toolkits', 'exit'], run.stdout);
  const value = (label) => steps.find(([l]) => l === label)?.[1];
  assert.equal(value('core_ping'), '{"pong":true}');
  assert.equal(JSON.parse(value('auth_get_state')).isAuthenticated, false);
  assert.match(run.stdout, /^composio_list_toolkits error \{"code":-32001,"kind":"auth_expired"\}$/m);
  assert.match(run.stdout, /^auth_state_changed \{"event":"INITIAL_SESSION","userId":null\}$/m);
  assert.equal(value('exit'), '0');
  assert.equal(run.stderr.includes('core-sidecar said:'), false, run.stderr);
});

test("the README's Node example is examples/quickstart.mjs, byte for byte", () => {
  const readme = readFileSync(path.join(REPO, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('### Node (Electron main process)'));
  const block = section.match(/```js\n([\s\S]*?)```/);
  assert.ok(block, 'no ```js block in the README\'s Node section');
  assert.equal(block[1], readFileSync(QUICKSTART, 'utf8'), 'copy examples/quickstart.mjs into the README');
});
