// src/generated.ts is what scripts/gen-types.mjs makes of schema/openrpc.json today, and the
// generator needs no edit for methods and notifications added to the contract.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { OUTPUT_PATH, generate, readContract } from '../scripts/gen-types.mjs';
import { tsc } from './tsc.mjs';

test('src/generated.ts is up to date with schema/openrpc.json (else: npm run gen)', () => {
  const expected = generate(readContract());
  const actual = readFileSync(OUTPUT_PATH, 'utf8');
  assert.ok(actual === expected, 'src/generated.ts is stale: run `npm run gen` in clients/typescript and commit it');
});

test('every method and notification of the contract has its entry', () => {
  const contract = readContract();
  const text = readFileSync(OUTPUT_PATH, 'utf8');
  const body = (name) => text.slice(text.indexOf(`export interface ${name} {`)).split('\n}\n')[0];
  for (const m of contract.methods) {
    const key = /^[A-Za-z_$][\w$]*$/.test(m.name) ? m.name : JSON.stringify(m.name);
    assert.match(body('Methods'), new RegExp(`\\n  ${key.replace(/[.$]/g, '\\$&')}: \\{ params: `), m.name);
  }
  for (const n of contract['x-notifications']) assert.ok(body('Notifications').includes(`\n  ${n.name}: `), n.name);
});

/** The contract with a method and a notification of the kinds a new version may add. */
function grownContract() {
  const contract = readContract();
  contract.methods.push(
    {
      name: 'core_future_handshake',
      summary: 'A method a later contract may add.',
      paramStructure: 'by-name',
      params: [],
      'x-paramsSchema': {
        type: 'object',
        additionalProperties: false,
        properties: {
          protocolVersion: { type: 'integer', format: 'uint32', minimum: 1 },
          clientInfo: {
            type: 'object',
            additionalProperties: false,
            properties: { name: { type: 'string' }, version: { type: 'string' } },
            required: ['name', 'version'],
          },
        },
        required: ['protocolVersion'],
      },
      result: {
        name: 'result',
        schema: {
          type: 'object',
          properties: { protocolVersion: { type: 'integer' }, serverInfo: { $ref: '#/components/schemas/Version' } },
          required: ['protocolVersion', 'serverInfo'],
        },
      },
      tags: [{ name: 'public' }],
      errors: [{ $ref: '#/components/errors/InvalidParams' }],
    },
    {
      // Only `params` entries, no `x-paramsSchema`; a name that is not an identifier.
      name: '$/probe',
      paramStructure: 'by-name',
      params: [
        { name: 'id', required: true, schema: { type: ['integer', 'string'] } },
        { name: 'why', required: false, schema: { enum: ['user', 'timeout'] } },
      ],
      result: { name: 'result', schema: { type: 'null' } },
      tags: [{ name: 'public' }],
      errors: [],
    },
  );
  contract['x-notifications'].push({
    name: 'progress',
    params: [{ name: 'done', required: true, schema: { type: 'number' } }],
  });
  return contract;
}

test('a grown contract (a new method with nested params, params-only methods, a new notification) generates types that hold', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'gen-types-'));
  try {
    writeFileSync(path.join(dir, 'generated.ts'), generate(grownContract()));
    const use = [
      "import { METHODS, type Methods, type Notifications } from './generated.js';",
      "type P = Methods['core_future_handshake']['params'];",
      "type R = Methods['core_future_handshake']['result'];",
      "const full: P = { protocolVersion: 1, clientInfo: { name: 'shell', version: '1.0.0' } };",
      'const bare: P = { protocolVersion: 1 };',
      "declare const r: R; const v: number = r.protocolVersion; const n: string = r.serverInfo.name;",
      "const probe: Methods['$/probe']['params'] = { id: 'x', why: 'user' };",
      "const none: Methods['$/probe']['result'] = null;",
      "const done: Notifications['progress'] = { done: 0.5 };",
      "const tags: readonly ['public'] = METHODS.core_future_handshake.tags;",
      'console.log(full, bare, v, n, probe, none, done, tags);',
      "const wrongType: P = { protocolVersion: '1' }; // BAD",
      'const noVersion: P = {}; // BAD',
      "const partialInfo: P = { protocolVersion: 1, clientInfo: { name: 'x' } }; // BAD",
      "const badWhy: Methods['$/probe']['params'] = { id: 1, why: 'later' }; // BAD",
      'console.log(wrongType, noVersion, partialInfo, badWhy);',
    ];
    writeFileSync(path.join(dir, 'use.ts'), `${use.join('\n')}\n`);
    const { status, output } = tsc([path.join(dir, 'use.ts')]);
    assert.notEqual(status, 0, output);
    const errorLines = [...output.matchAll(/use\.ts\((\d+),\d+\): error/g)].map((m) => Number(m[1]));
    const badLines = use.flatMap((l, i) => (l.endsWith('// BAD') ? [i + 1] : []));
    assert.deepEqual([...new Set(errorLines)], badLines, output);
    assert.ok(!/generated\.ts\(/.test(output), `the generated file itself has errors:\n${output}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
