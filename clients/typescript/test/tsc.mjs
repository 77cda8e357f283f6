// Runs the package's own TypeScript compiler in strict mode, without emitting.
import { spawnSync } from 'node:child_process';
import path from 'node:path';

import { PACKAGE } from './helpers.mjs';

const TSC = path.join(PACKAGE, 'node_modules', 'typescript', 'bin', 'tsc');

/** `tsc --strict --noEmit` on `files`; returns { status, output }. */
export function tsc(files, extra = []) {
  const run = spawnSync(
    process.execPath,
    [
      TSC,
      '--strict',
      '--noEmit',
      '--pretty',
      'false',
      '--target',
      'ES2022',
      '--module',
      'NodeNext',
      '--moduleResolution',
      'NodeNext',
      '--types',
      'node',
      ...extra,
      ...files,
    ],
    { cwd: PACKAGE, encoding: 'utf8' },
  );
  if (run.error) throw run.error;
  return { status: run.status, output: `${run.stdout}${run.stderr}` };
}
