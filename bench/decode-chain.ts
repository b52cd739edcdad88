// Decode-chain benchmark: one token's GEMMs of SmolLM2-135M at batch 1 (or --rows M), back to back
// on distinct bf16 weights (269 MB), through the engine's few-rows path (bench/decode_chain.cc, built
// here from native/ with the system C++ compiler), against a read-only stream probe on the same
// thread pool.
// Two variants run in alternating processes, each with its environment variables (by default the
// two prefetches of the few-rows kernels, forced: --base-env SEALKIT_FEW_ROWS_NTA=1, the hint one
// block ahead, against --env SEALKIT_FEW_ROWS_NTA=0, L2 32 rows ahead; unset, the CPU picks), and
// the table gives each one's median GB/s, its share of the probe and the median of the per-round
// speed ratios.
//
//   npx tsx bench/decode-chain.ts [--rounds 5] [--tokens 40] [--rows 1] [--threads 2] [--base-env K=V[,...]] [--env K=V[,...]] [--json]
//
// The last stdout line is one JSON object. What it leaves out of a decoding step (attention, norms,
// sampling, the host) `seal bench decode --profile` shows.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parseEnvList } from '../lib/bench/env.js';
import { median } from '../lib/bench/median.js';
import { native } from '../lib/native.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { values: opts } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    tokens: { type: 'string', default: '40' },
    rows: { type: 'string', default: '1' },
    threads: { type: 'string', default: '2' },
    'base-env': { type: 'string', default: 'SEALKIT_FEW_ROWS_NTA=1' },
    env: { type: 'string', default: 'SEALKIT_FEW_ROWS_NTA=0' },
    json: { type: 'boolean', default: false },
  },
});
const positiveInt = (name: string, v: string, min: number): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name}: expected an integer >= ${min}, got '${v}'`);
  return n;
};
const rounds = positiveInt('rounds', opts.rounds, 1);
const tokens = positiveInt('tokens', opts.tokens, 2);
const rows = positiveInt('rows', opts.rows, 1);
if (rows > 64) throw new Error(`--rows: expected at most 64, got ${rows}`);
const threads = positiveInt('threads', opts.threads, 1);
const baseEnv = opts['base-env'] ? parseEnvList(opts['base-env'], '--base-env') : {};
const variantEnv = parseEnvList(opts.env, '--env');

const isa = native().info().isaDetected;
if (isa !== 'avx512bf16' && isa !== 'avx512') {
  console.log(`skip: the few-rows path and the probe need AVX-512 (this CPU: ${isa})`);
  process.exit(0);
}

// All of the addon's CPU sources (native/sources.json, which the builds read) but its N-API bindings:
// a hand-kept list went stale as the kernels' files split.
const NATIVE_SOURCES = (JSON.parse(readFileSync(join(ROOT, 'native', 'sources.json'), 'utf8')) as { cpu: string[] }).cpu;
const SOURCES = ['bench/decode_chain.cc', ...NATIVE_SOURCES.filter((s) => !s.startsWith('native/addon/'))];

interface Run {
  token_ms_median: number; gbs: number; probe_gbs_before: number; probe_gbs_after: number; share_of_probe: number;
  weight_bytes: number; packed: boolean; ops: Record<string, { ms: number; gbs: number }>;
}

const dir = mkdtempSync(join(os.tmpdir(), 'sealkit-decode-chain-'));
try {
  const exe = join(dir, 'decode_chain');
  process.stderr.write('building bench/decode_chain.cc against native/ ...\n');
  // The engine's own flags (CMakeLists.txt): its kernels pick their ISA per function, not per build.
  const cc = spawnSync('c++', ['-O3', '-fno-math-errno', '-std=c++20', '-pthread', `-I${join(ROOT, 'native')}`,
    ...SOURCES.map((s) => join(ROOT, s)), '-o', exe], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`building decode_chain failed:\n${cc.stderr || String(cc.error)}`);
  const run = (env: Record<string, string>): Run => {
    const r = spawnSync(exe, ['--tokens', String(tokens), '--rows', String(rows)], { encoding: 'utf8', env: { ...process.env, SEALKIT_THREADS: String(threads), ...env } });
    const last = r.stdout?.trim().split('\n').pop();
    if (r.status !== 0 || !last) throw new Error(`decode_chain failed: ${r.stderr || String(r.error)}`);
    return JSON.parse(last) as Run;
  };
  const a: Run[] = [], b: Run[] = [];
  for (let i = 0; i < rounds; i++) {
    // Alternate which variant goes first, so a drift in the machine's speed hits both alike.
    if (i % 2 === 0) { a.push(run(baseEnv)); b.push(run(variantEnv)); } else { b.push(run(variantEnv)); a.push(run(baseEnv)); }
    process.stderr.write(`\r  round ${i + 1}/${rounds}: ${a[i]!.gbs.toFixed(1)} / ${b[i]!.gbs.toFixed(1)} GB/s`);
  }
  process.stderr.write('\n');
  const summary = (runs: Run[]) => ({
    gbs: median(runs.map((r) => r.gbs)), share_of_probe: median(runs.map((r) => r.share_of_probe)),
    probe_gbs: median(runs.map((r) => Math.max(r.probe_gbs_before, r.probe_gbs_after))),
    token_ms: median(runs.map((r) => r.token_ms_median)),
    ops: Object.fromEntries(Object.keys(runs[0]!.ops).map((k) => [k, median(runs.map((r) => r.ops[k]!.gbs))])),
  });
  const sa = summary(a), sb = summary(b);
  const ratio = median(a.map((r, i) => b[i]!.token_ms_median / r.token_ms_median));
  const envLabel = (env: Record<string, string>) => Object.entries(env).map(([k, v]) => `${k}=${v}`).join(',');
  const baseLabel = envLabel(baseEnv) || 'default', label = envLabel(variantEnv);
  const reads = a[0]!.packed ? 'their packed strips' : 'their rows';
  console.log(`decode chain: SmolLM2-135M's GEMMs for one token at batch ${rows} (${(a[0]!.weight_bytes / 1e6).toFixed(1)} MB of bf16 weights, ${reads}), ${threads} thread(s), isa ${isa}, ${rounds} alternating rounds, medians`);
  const width = Math.max(label.length, baseLabel.length, 'variant'.length);
  console.log(`${'variant'.padEnd(width)}   GB/s  of probe  probe GB/s  token ms |   q/k/v       o  gate/up    down  LM head (GB/s)`);
  for (const [name, s] of [[baseLabel, sa], [label, sb]] as const) {
    const ops = ['qkv', 'o', 'gate_up', 'down', 'lm_head'].map((k) => (s.ops[k] ?? 0).toFixed(1).padStart(7)).join(' ');
    console.log(`${name.padEnd(width)} ${s.gbs.toFixed(1).padStart(6)} ${`${(100 * s.share_of_probe).toFixed(1)}%`.padStart(9)} ${s.probe_gbs.toFixed(1).padStart(11)} ${s.token_ms.toFixed(3).padStart(9)} | ${ops}`);
  }
  console.log(`${baseLabel} / ${label}: ${ratio.toFixed(3)}x (median of the per-round ratios of token time; > 1: ${baseLabel} is faster)`);
  console.log(JSON.stringify({ bench: 'decode-chain', isa, threads, rows, packed: a[0]!.packed, rounds, tokens, base: baseEnv, variant: variantEnv, default: sa, other: sb, speed_ratio: ratio }));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
