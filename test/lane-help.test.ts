// LaneHelp (native/core/lane_help.h: the lane of a split training pass done first lends its thread
// to the other) on its own, under ThreadSanitizer: test/native/lane_help_stress.cc runs hundreds of
// split passes of random parallel_for runs, either lane finishing first, some throwing, and checks
// that every item ran exactly once before its run returned. The addon's own tests check the bits of
// helped passes (model.test.ts); this one checks the protocol for races the bits would not show.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const root = fileURLToPath(new URL('..', import.meta.url));
const hasGxx = spawnSync('g++', ['--version'], { encoding: 'utf8' }).status === 0;
const sources = ['test/native/lane_help_stress.cc', 'native/core/lane_help.cc', 'native/core/threadpool.cc'];

(hasGxx ? test : test.skip)('LaneHelp: split passes with a helping lane, under ThreadSanitizer: every task once, no race, exceptions delivered', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sealkit-lane-help-'));
  try {
    const compile = (flags: string[], exe: string) =>
      spawnSync('g++', ['-std=c++17', '-g', '-pthread', ...flags, ...sources, '-o', exe], { cwd: root, encoding: 'utf8', timeout: 180_000 });
    const plain = () => {
      const exe = join(dir, 'stress');
      const r = compile(['-O2'], exe);
      assert.is(r.status, 0, `g++ failed:\n${r.stderr}`);
      return exe;
    };
    // Not under the sanitizer suite's preloaded ASan runtime, which a TSan binary cannot start with.
    const { LD_PRELOAD: _, ASAN_OPTIONS: __, ...env } = process.env;
    const run = (exe: string) => spawnSync(exe, ['300'], { encoding: 'utf8', timeout: 180_000, env: { ...env, TSAN_OPTIONS: 'halt_on_error=1 exitcode=66' } });
    // Without a TSan runtime (g++ without libtsan), or where it cannot start (some kernels lay out
    // memory in a way an older runtime refuses), the checks of every task's slot still run, on a
    // plain build.
    const tsanExe = join(dir, 'stress-tsan');
    const tsan = compile(['-O1', '-fsanitize=thread'], tsanExe);
    let r = tsan.status === 0 ? run(tsanExe) : null;
    if (!r || (r.status !== 0 && /ThreadSanitizer: (unexpected memory mapping|failed to)/.test(r.stderr))) {
      console.warn(`  (ThreadSanitizer ${r ? 'cannot run' : 'cannot build'} here: the stress test runs without it)`);
      r = run(plain());
    }
    assert.is(r.status, 0, `stress test exited ${r.status}${r.signal ? ` (${r.signal})` : ''}:\n${r.stdout}\n${r.stderr.slice(0, 4000)}`);
    const m = /passes (\d+), runs planned for two threads (\d+), passes that threw (\d+), runs shared (\d+), failures 0/.exec(r.stdout);
    assert.ok(m, `summary line: ${r.stdout}`);
    assert.is(Number(m![1]), 300);
    assert.ok(Number(m![3]) > 0, 'some passes threw');
    assert.ok(Number(m![4]) > 100, `runs shared with a helper: ${m![4]}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
