// The `seal` CLI as a user runs it: a child process through bin/seal.js, JSON on --json.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { flopsPerToken } from '../lib/bench/engine-bench.js';
import { cpuPeakKind } from '../lib/bench/peak-reference.js';
import { abVerdict } from '../lib/cli/commands/bench.js';
import { native } from '../lib/native.js';
import { Model } from '../lib/model/model.js';
import { presetConfig } from '../lib/model/presets.js';
import { repoRoot } from './helpers/fixtures.js';

function seal(...args: string[]) {
  const r = spawnSync(process.execPath, [join(repoRoot, 'bin/seal.js'), ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
const lastJson = (out: string) => JSON.parse(out.trim().split('\n').at(-1) ?? 'null') as Record<string, unknown>;

test('seal --version prints the package version', () => {
  const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
  const r = seal('--version');
  assert.equal(r.code, 0);
  assert.equal(r.out.trim(), pkg.version);
});

test('seal info --json reports ISA, threads and backend', () => {
  const r = seal('info', '--json', '--threads', '1');
  assert.equal(r.code, 0, r.err);
  const info = lastJson(r.out);
  assert.ok(['scalar', 'avx2', 'avx512', 'avx512bf16'].includes(info.isa as string));
  assert.equal(info.threads, 1);
  assert.ok((info.backends as string[]).includes('cpu'));
});

test('seal score --json equals Model.score on the same ids', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sealkit-cli-'));
  try {
    const ids = [[5, 17, 33, 2, 90, 101, 7], [1, 2, 3]];
    writeFileSync(join(dir, 'ids.json'), JSON.stringify(ids));
    const modelDir = join(repoRoot, 'test/fixtures/models/qwen2-bias');
    const r = seal('score', '--model', modelDir, '--tokens', join(dir, 'ids.json'), '--json');
    assert.equal(r.code, 0, r.err);
    const got = lastJson(r.out);
    const model = await Model.load(modelDir);
    const want = await model.score(ids.map((tokens) => ({ tokens })));
    await model.dispose();
    assert.equal(got.tokens, want.tokens);
    assert.ok(Math.abs((got.nll as number) - want.nll) < 1e-9);
    assert.ok(Math.abs((got.ppl as number) - Math.exp(want.nll)) < 1e-9);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('seal score: bad input gives a clear message and a non-zero exit', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sealkit-cli-'));
  try {
    writeFileSync(join(dir, 'bad.json'), '{"not": "ids"}');
    const modelDir = join(repoRoot, 'test/fixtures/models/llama-gqa');
    const r = seal('score', '--model', modelDir, '--tokens', join(dir, 'bad.json'));
    assert.is.not(r.code, 0);
    assert.match(r.err, /bad\.json: expected an array/);
    const missing = seal('score', '--model', join(dir, 'nowhere'), '--tokens', join(dir, 'bad.json'));
    assert.is.not(missing.code, 0);
    const unknown = seal('frobnicate');
    assert.equal(unknown.code, 2);
    assert.match(unknown.err, /unknown command/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('seal bench train --preset tiny --json ends with a tokens_per_s, gflops and mfu line', () => {
  const r = seal('bench', 'train', '--preset', 'tiny', '--batch', '2', '--seq', '32', '--repeats', '2', '--warmup', '1', '--threads', '1', '--json');
  assert.equal(r.code, 0, r.err);
  const j = lastJson(r.out) as { tokens_per_s: number; gflops: number; mfu: number | null; peak: { kind?: string; gflops?: number; source?: string; none?: string }; batch: number; seq: number };
  assert.ok(j.tokens_per_s > 0);
  assert.equal(j.batch, 2);
  assert.equal(j.seq, 32);
  // MFU against the peak of the instruction the bf16 GEMMs use, measured on the bench's one thread.
  const kind = cpuPeakKind(native().info(), 'bf16');
  if (kind) {
    assert.is(j.peak.kind, kind);
    assert.is(j.peak.source, 'measured');
    assert.ok(j.mfu !== null && j.mfu > 0 && j.mfu < 1.5, `mfu ${j.mfu}`);
    assert.ok(Math.abs(j.mfu! - j.gflops / j.peak.gflops!) < 1e-12);
  } else {
    assert.is(j.mfu, null);
    assert.type(j.peak.none, 'string');
  }
  const text = seal('bench', 'forward', '--preset', 'tiny', '--batch', '1', '--seq', '16', '--repeats', '1', '--warmup', '0', '--threads', '1');
  assert.equal(text.code, 0, text.err);
  assert.match(text.out, kind ? /GFLOP\/s, [\d.]+% MFU \(.+ on 1 thread, measured: [\d,]+ GFLOP\/s\)/ : /no MFU: /);
});

test('seal bench train --loss-on trains on each sequence\'s tail and counts the LM head on those rows only', () => {
  const r = seal('bench', 'train', '--preset', 'tiny', '--batch', '2', '--seq', '32', '--repeats', '2', '--warmup', '1', '--threads', '1',
    '--loss-on', '0.25', '--json');
  assert.equal(r.code, 0, r.err);
  const j = lastJson(r.out) as { loss_on: number; tokens_per_s: number; gflops: number };
  assert.is(j.loss_on, 0.25);
  const perToken = (lossOn: number) => flopsPerToken(presetConfig('tiny'), 32, 'train', 16, lossOn);
  assert.ok(Math.abs((j.gflops * 1e9) / j.tokens_per_s / perToken(0.25) - 1) < 1e-9, 'FLOPs per token with the loss on a quarter');
  const c = presetConfig('tiny');
  assert.is(perToken(1) - perToken(0.25), 4 * 0.75 * c.vocabSize * c.hiddenSize);
  for (const args of [['train', '--loss-on', '0'], ['train', '--loss-on', '1.5'], ['train', '--loss-on', 'x'], ['forward', '--loss-on', '0.5'],
    ['train', '--seq', '16', '--loss-on', '0.01']]) {
    const bad = seal('bench', ...args, '--preset', 'tiny');
    assert.equal(bad.code, 2, `${args.join(' ')}: ${bad.err}`);
    assert.match(bad.err, /--loss-on/);
  }
});

test('seal bench forward|train|decode --ab-env times both variants in one process; misuse is a usage error', () => {
  const r = seal('bench', 'forward', '--preset', 'tiny', '--batch', '2', '--seq', '32', '--repeats', '3', '--warmup', '1', '--threads', '1',
    '--ab-env', 'SEALKIT_LOCAL_PACK=0,SEALKIT_UNUSED_FLAG=a=b', '--json');
  assert.equal(r.code, 0, r.err);
  const j = lastJson(r.out) as { step_ms_all: number[]; ab: { env: Record<string, string>; step_ms_all: number[]; tokens_per_s: number; speedup_median: number } };
  assert.equal(j.ab.env, { SEALKIT_LOCAL_PACK: '0', SEALKIT_UNUSED_FLAG: 'a=b' });
  assert.is(j.step_ms_all.length, 3);
  assert.is(j.ab.step_ms_all.length, 3);
  assert.ok(j.ab.tokens_per_s > 0 && j.ab.speedup_median > 0);
  const text = seal('bench', 'train', '--preset', 'tiny', '--batch', '1', '--seq', '16', '--repeats', '1', '--warmup', '0', '--threads', '1',
    '--ab-env', 'SEALKIT_LOCAL_PACK=0');
  assert.equal(text.code, 0, text.err);
  assert.match(text.out, /with SEALKIT_LOCAL_PACK=0: [\d.]+ tokens\/s/);
  const decode = seal('bench', 'decode', '--preset', 'tiny', '--gen-batch', '2', '--prompt', '8', '--new', '6', '--repeats', '3', '--warmup', '0',
    '--threads', '1', '--ab-env', 'SEALKIT_FEW_ROWS_NTA=0');
  assert.equal(decode.code, 0, decode.err);
  assert.match(decode.out, /with SEALKIT_FEW_ROWS_NTA=0: [\d.]+ tokens\/s   [\d.]+ ms\/token step\n  speed with \/ without \(median of 3 repeats\): [\d.]+: (faster|slower|the same speed)/);
  // The ratio in words: above 1 the steps with the variables ran faster.
  assert.is(abVerdict(1.019, 'K=0'), 'faster with K=0 (1.9 %)');
  assert.is(abVerdict(0.974, 'K=0'), 'slower with K=0 (2.6 %)');
  assert.is(abVerdict(1.0002, 'K=0'), 'the same speed with and without K=0');
  for (const args of [['decode', '--ab-env', 'X=1', '--profile'], ['train', '--ab-env', 'X'], ['train', '--ab-env', 'X=1', '--profile']]) {
    const bad = seal('bench', ...args, '--preset', 'tiny');
    assert.equal(bad.code, 2, `${args.join(' ')}: ${bad.err}`);
    assert.match(bad.err, /--ab-env/);
  }
});

test('seal bench train --steps-per-call runs several steps per engine call (trainSteps) and counts each; misuse is a usage error', () => {
  const r = seal('bench', 'train', '--preset', 'tiny', '--batch', '1', '--seq', '16', '--repeats', '2', '--warmup', '1', '--threads', '1',
    '--steps-per-call', '3', '--profile', '--json');
  assert.equal(r.code, 0, r.err);
  const j = lastJson(r.out) as { steps_per_call: number; tokens_per_s: number; step_ms_median: number; profile: { steps: number; ops: { op: string; calls_per_step: number }[] } };
  assert.is(j.steps_per_call, 3);
  assert.ok(Math.abs(j.tokens_per_s * j.step_ms_median / 1000 - 16) < 1e-6, 'tokens per second over one step, not one call');
  // The profile covers 2 calls of 3 steps: 6 optimiser steps, per step one AdamW launch.
  assert.is(j.profile.steps, 6);
  assert.is(j.profile.ops.find((o) => o.op === 'adamw_many')?.calls_per_step, 1);
  const text = seal('bench', 'train', '--preset', 'tiny', '--batch', '1', '--seq', '16', '--repeats', '1', '--warmup', '0', '--steps-per-call', '2');
  assert.equal(text.code, 0, text.err);
  assert.match(text.out, /train tiny batch 1 x 16, 2 steps per call,/);
  for (const args of [['train', '--steps-per-call', '0'], ['forward', '--steps-per-call', '2'], ['train', '--steps-per-call', 'x']]) {
    const bad = seal('bench', ...args, '--preset', 'tiny');
    assert.equal(bad.code, 2, `${args.join(' ')}: ${bad.err}`);
    assert.match(bad.err, /--steps-per-call/);
  }
});

test('seal bench --adapters mixes adapters in the batch (one per sequence, as SEAL\'s inner loop); bad counts are usage errors', () => {
  const opsOf = (j: Record<string, unknown>) => (j.profile as { ops: { op: string }[] }).ops.map((o) => o.op);
  const train = seal('bench', 'train', '--preset', 'tiny', '--batch', '4', '--seq', '16', '--repeats', '1', '--warmup', '0', '--adapters', '3', '--profile', '--json');
  assert.equal(train.code, 0, train.err);
  const j = lastJson(train.out);
  assert.is(j.adapters, 3);
  // The tiny model's pass runs as two lanes of two sequences (adapters 0, 1 | 2, 0), each lane's
  // sequences as chains.
  assert.ok(opsOf(j).some((op) => op.startsWith('gemm_chains 2 x')), 'the sequences of adapters 0-2 run as chains');
  assert.is(lastJson(seal('bench', 'train', '--preset', 'tiny', '--batch', '2', '--seq', '16', '--repeats', '1', '--warmup', '0', '--json').out).adapters, 1);
  const text = seal('bench', 'forward', '--preset', 'tiny', '--batch', '2', '--seq', '16', '--repeats', '1', '--warmup', '0', '--adapters', '2');
  assert.equal(text.code, 0, text.err);
  assert.match(text.out, /forward tiny batch 2 x 16, 2 adapters,/);
  const decode = lastJson(seal('bench', 'decode', '--preset', 'tiny', '--gen-batch', '2', '--prompt', '4', '--new', '3', '--repeats', '1', '--warmup', '0', '--adapters', '2', '--profile', '--json').out);
  assert.is(decode.adapters, 2);
  assert.ok(opsOf(decode).some((op) => op.startsWith('gemm_chains 2 x')), 'decoding runs the prompts\' adapters as chains');
  for (const args of [['train', '--adapters', '0'], ['forward', '--adapters', '-1'], ['decode', '--adapters', 'x']]) {
    const bad = seal('bench', ...args, '--preset', 'tiny');
    assert.equal(bad.code, 2, `${args.join(' ')}: ${bad.err}`);
    assert.match(bad.err, /--adapters/);
  }
});

test('seal bench --rank/--alpha shape the adapters the engine runs (and the FLOPs counted); misuse is a usage error', () => {
  const opsOf = (j: Record<string, unknown>) => (j.profile as { ops: { op: string }[] }).ops.map((o) => o.op);
  const train = seal('bench', 'train', '--preset', 'tiny', '--batch', '2', '--seq', '32', '--repeats', '1', '--warmup', '0', '--threads', '1',
    '--rank', '8', '--alpha', '16', '--profile', '--json');
  assert.equal(train.code, 0, train.err);
  const j = lastJson(train.out);
  assert.is(j.rank, 8);
  assert.is(j.alpha, 16);
  // The engine got rank 8: its fused updates are named by the rank, and its narrow products are 8 wide.
  assert.ok(opsOf(j).some((op) => / r8$/.test(op)), `rank 8 updates in ${opsOf(j).join(', ')}`);
  assert.not.ok(opsOf(j).some((op) => / r16$/.test(op)), 'no rank-16 update');
  const perTokenOf = (r: Record<string, unknown>) => (r.gflops as number) * 1e9 / (r.tokens_per_s as number);
  assert.ok(Math.abs(perTokenOf(j) / flopsPerToken(presetConfig('tiny'), 32, 'train', 8) - 1) < 1e-9, 'FLOPs counted at rank 8');
  const text = seal('bench', 'train', '--preset', 'tiny', '--batch', '1', '--seq', '16', '--repeats', '1', '--warmup', '0', '--rank', '32', '--alpha', '64');
  assert.equal(text.code, 0, text.err);
  assert.match(text.out, /train tiny batch 1 x 16, LoRA r 32, alpha 64,/);
  const base = lastJson(seal('bench', 'forward', '--preset', 'tiny', '--batch', '1', '--seq', '16', '--repeats', '1', '--warmup', '0', '--json').out);
  assert.is(base.rank, undefined, 'no adapter, no rank');
  assert.ok(Math.abs(perTokenOf(base) / flopsPerToken(presetConfig('tiny'), 16, 'forward', 0) - 1) < 1e-9, 'the base model: no LoRA FLOPs');
  // Scoring under adapters counts their forward products (2 r (in + out) per projection) too.
  const scored = lastJson(seal('bench', 'forward', '--preset', 'tiny', '--batch', '1', '--seq', '16', '--repeats', '1', '--warmup', '0',
    '--adapters', '1', '--rank', '8', '--json').out);
  assert.is(scored.rank, 8);
  const withLora = flopsPerToken(presetConfig('tiny'), 16, 'forward', 8);
  assert.ok(withLora > flopsPerToken(presetConfig('tiny'), 16, 'forward', 0));
  assert.ok(Math.abs(perTokenOf(scored) / withLora - 1) < 1e-9, 'FLOPs of scoring under a rank-8 adapter');
  const decode = lastJson(seal('bench', 'decode', '--preset', 'tiny', '--gen-batch', '2', '--prompt', '4', '--new', '3', '--repeats', '1', '--warmup', '0',
    '--adapters', '2', '--rank', '4', '--json').out);
  assert.equal([decode.rank, decode.alpha], [4, 32]);
  for (const args of [['train', '--rank', '0'], ['train', '--rank', '2.5'], ['train', '--alpha', '0'], ['train', '--alpha', 'x'],
    ['forward', '--rank', '8'], ['decode', '--alpha', '8']]) {
    const bad = seal('bench', ...args, '--preset', 'tiny');
    assert.equal(bad.code, 2, `${args.join(' ')}: ${bad.err}`);
    assert.match(bad.err, /--rank|--alpha/);
  }
});

test('seal bench decode --temperature/--top-p samples and says so; bad values are usage errors', () => {
  const r = seal('bench', 'decode', '--preset', 'tiny', '--gen-batch', '2', '--prompt', '8', '--new', '6', '--repeats', '1', '--warmup', '0',
    '--threads', '1', '--temperature', '1', '--top-p', '0.95', '--json');
  assert.equal(r.code, 0, r.err);
  const j = lastJson(r.out);
  assert.ok((j.tokens_per_s as number) > 0);
  assert.equal(j.sampling, 'temperature 1, top-p 0.95');
  const greedy = lastJson(seal('bench', 'decode', '--preset', 'tiny', '--gen-batch', '1', '--prompt', '4', '--new', '3', '--repeats', '1', '--warmup', '0', '--json').out);
  assert.equal(greedy.sampling, 'greedy');
  for (const [flag, value] of [['--temperature', '-1'], ['--top-p', '0'], ['--top-p', '1.5']]) {
    const bad = seal('bench', 'decode', '--preset', 'tiny', flag!, value!);
    assert.equal(bad.code, 2, `${flag} ${value}: ${bad.err}`);
    assert.match(bad.err, new RegExp(`${flag}`));
  }
});

test.run();
