#!/usr/bin/env node
// Runs the uvu suites under test/ (TypeScript through tsx) and closes with the line
//   tests: N passed, N failed, N skipped
// Exits non-zero when uvu fails, when any test failed, or when no test ran.
// Usage: node scripts/run-tests.mjs [pattern]   (pattern: regex over test file names)
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const pattern = process.argv[2] ?? '\\.test\\.ts$';
const child = spawn(process.execPath, ['--import', 'tsx', 'node_modules/uvu/bin.js', 'test', pattern],
  { cwd: root, env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });

let out = '';
child.stdout.on('data', (d) => { out += d; process.stdout.write(d); });
child.stderr.on('data', (d) => process.stderr.write(d));
child.on('close', (code, signal) => {
  const num = (label) => {
    const m = out.match(new RegExp(`^\\s*${label}:\\s+(\\d+)\\s*$`, 'm'));
    return m ? Number(m[1]) : 0;
  };
  const total = num('Total');
  const passed = num('Passed');
  const skipped = num('Skipped');
  // A suite that crashed before uvu's summary counts as one failure.
  const failed = Math.max(total - passed, code !== 0 && total === passed ? 1 : 0);
  console.log(`tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
  if (signal) console.error(`test process killed by ${signal}`);
  if (total === 0) console.error('no test ran');
  process.exit(code !== 0 || failed > 0 || total === 0 || signal ? 1 : 0);
});
