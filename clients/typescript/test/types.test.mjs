// Type tests: a program using the client compiles with `tsc --strict`; the same program with a
// misspelled method name, or a param of the wrong type, does not, and tsc names that line.
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { PACKAGE } from './helpers.mjs';
import { tsc } from './tsc.mjs';

const PROGRAM = path.join(PACKAGE, 'test', 'types', 'program.ts');
const QUICKSTART = path.join(PACKAGE, 'examples', 'quickstart.mjs');
const lines = readFileSync(PROGRAM, 'utf8').split('\n');
// Copies live inside the package, so that `core-sidecar-client` resolves to it (self-reference).
const TMP = path.join(PACKAGE, 'test', 'types', `tmp-${process.pid}`);

/** program.ts with the line marked `// <marker>` changed by `edit`: { file, line }. */
function variant(name, marker, edit) {
  const index = lines.findIndex((l) => l.endsWith(`// ${marker}`));
  assert.ok(index >= 0, `no line marked ${marker}`);
  const changed = edit(lines[index]);
  assert.notEqual(changed, lines[index], 'the edit changed nothing');
  const file = path.join(TMP, `${name}.ts`);
  writeFileSync(file, [...lines.slice(0, index), changed, ...lines.slice(index + 1)].join('\n'));
  return { file, line: index + 1 };
}

let good; // tsc on program.ts and the quickstart
let bad; // tsc on the variants, one run (each file is its own module)
let variants;
before(() => {
  mkdirSync(TMP, { recursive: true });
  variants = {
    method: variant('misspelled-method', 'METHOD', (l) => l.replace('"core_ping"', '"core_pnig"')),
    wrongType: variant('wrong-param', 'PARAM', (l) => l.replace('password: "pw"', 'password: 42')),
    missing: variant('missing-param', 'PARAM', (l) => l.replace(', password: "pw"', '')),
    typo: variant('typo-param', 'PARAM', (l) => l.replace('password:', 'pasword:')),
  };
  good = tsc([PROGRAM, QUICKSTART], ['--allowJs', '--checkJs']);
  bad = tsc(Object.values(variants).map((v) => v.file));
});
after(() => rmSync(TMP, { recursive: true, force: true }));

/** The errors tsc reported for `file`: each `(line,col): error TSnnnn: message` with its details. */
function errorsOf({ file }) {
  const name = path.basename(file);
  return bad.output.split(/\n(?=\S)/).filter((e) => e.includes(`${name}(`));
}

/** Every error of the variant is on its changed line, and one of them matches `pattern`. */
function assertFailsOnItsLine(v, pattern) {
  assert.notEqual(bad.status, 0, bad.output);
  const errors = errorsOf(v);
  assert.ok(errors.length > 0, `tsc accepted ${path.basename(v.file)}:\n${bad.output}`);
  for (const e of errors) assert.match(e, new RegExp(`\\(${v.line},\\d+\\): error TS\\d+`), bad.output);
  assert.ok(errors.some((e) => pattern.test(e)), bad.output);
}

test('the program compiles with tsc --strict', () => {
  assert.equal(good.status, 0, good.output);
});

test("the README's example (examples/quickstart.mjs) type-checks as JavaScript (checkJs)", () => {
  assert.equal(good.status, 0, good.output);
  assert.equal(good.output.trim(), '');
});

test('a misspelled method name does not compile, and tsc names its line', () => {
  assertFailsOnItsLine(variants.method, /error TS2345: Argument of type '"core_pnig"' is not assignable/);
});

test('a param of the wrong type does not compile, and tsc names its line', () => {
  assertFailsOnItsLine(variants.wrongType, /error TS2322: Type 'number' is not assignable to type 'string'/);
});

test('a missing required param or a misspelled param name does not compile', () => {
  assertFailsOnItsLine(variants.missing, /Property 'password' is missing/);
  assertFailsOnItsLine(variants.typo, /'pasword' does not exist/);
});
