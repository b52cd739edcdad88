#!/usr/bin/env node
// Builds the addon with AddressSanitizer + UndefinedBehaviorSanitizer (cmake-js, into build-asan/)
// and runs the native-facing test suites against it. Node itself is not instrumented, so the ASan
// runtime is preloaded; leak detection is off because V8 keeps allocations alive until exit.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

const root = fileURLToPath(new URL('..', import.meta.url));
const run = (cmd, args, env = process.env) => {
  console.error(`[asan] ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env });
  if (r.status !== 0) process.exit(r.status ?? 1);
};
const gccFile = (name) => spawnSync('gcc', [`-print-file-name=${name}`], { encoding: 'utf8' }).stdout.trim();

run(process.execPath, [join(root, 'node_modules/cmake-js/bin/cmake-js'), 'compile', '--CDSEALKIT_SANITIZE=ON', '--out', 'build-asan']);
const addon = join(root, 'build-asan/Release/sealkit.node');
if (!existsSync(addon)) { console.error(`[asan] ${addon} was not built`); process.exit(1); }
const preload = [gccFile('libasan.so'), gccFile('libubsan.so')].join(':');
const pattern = process.argv[2] ?? '(ops|peak|attention-bf16|decode-kernels|parity|model|generate|sft|seal-loop|backend-parity|profile)\\.test\\.ts$';
run(process.execPath, [join(root, 'scripts/run-tests.mjs'), pattern], {
  ...process.env,
  SEALKIT_NATIVE_PATH: addon,
  LD_PRELOAD: preload,
  ASAN_OPTIONS: 'detect_leaks=0:abort_on_error=1',
  UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
});
