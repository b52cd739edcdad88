// Per-op profiles (Model { profile: true }, takeProfile, lib/bench/profile.ts, `seal bench --profile`):
// the calls a step makes are counted and timed, results do not change, and the summary's arithmetic
// holds.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { withEnv } from '../lib/bench/env.js';
import { formatProfile, mergeTimings, summariseProfile } from '../lib/bench/profile.js';
import { Model, type Sequence } from '../lib/model/model.js';
import { PROJ_NAMES } from '../lib/model/native-model.js';
import { presetConfig } from '../lib/model/presets.js';
import { repoRoot } from './helpers/fixtures.js';

const config = presetConfig('tiny');
const seqs: Sequence[] = [0, 1].map((s) => ({ tokens: Array.from({ length: 24 }, (_, i) => (i * 37 + s * 11) % config.vocabSize), slot: 0 }));

async function tinyModel(profile: boolean): Promise<Model> {
  const model = await Model.create(config, { storage: 'bf16', seed: 5, profile });
  model.createAdapter(0, { rank: 4, alpha: 8, targets: PROJ_NAMES, seed: 2 });
  return model;
}

// One pass over the whole batch: a small model's training pass would otherwise split into two lanes
// of sequences (the next test).
test('a profiled model counts and times its backend calls and trains to the same bits', () => withEnv({ SEALKIT_SPLIT_STEP: '0' }, async () => {
  const plain = await tinyModel(false);
  const profiled = await tinyModel(true);
  try {
    await profiled.takeProfile();  // drop the initialisation's calls
    const a = await plain.trainStep(seqs, { mode: 'lora', lr: 1e-3 });
    const b = await profiled.trainStep(seqs, { mode: 'lora', lr: 1e-3 });
    assert.is(b.loss.get(0), a.loss.get(0), 'same loss');
    assert.is(b.gradNorm.get(0), a.gradNorm.get(0), 'same gradient norm');
    const after = (await plain.score(seqs)).nll;
    const ops = await profiled.takeProfile();
    assert.is((await profiled.score(seqs)).nll, after, 'same weights after the step');

    const byOp = new Map(ops.map((o) => [o.op, o]));
    const L = config.numLayers;
    // One forward and one backward pass: two norms per layer plus the final one, each way, except
    // the first layer's input norm backward: below it only the (frozen) embeddings, so a LoRA step
    // forms no gradient there. Forward, every norm but the first runs with the residual add
    // before it.
    assert.is(byOp.get('rmsnorm_forward')?.calls, 1);
    assert.is(byOp.get('residual_rmsnorm_forward')?.calls, 2 * L);
    assert.is(byOp.get('axpy'), undefined);
    assert.is(byOp.get('rmsnorm_backward')?.calls, 2 * L);
    assert.is(byOp.get('attention_forward')?.calls, L);
    assert.is(byOp.get('attention_backward')?.calls, L);
    // The optimizer: one call for the norm and one for AdamW over the slot's tensors.
    assert.is(byOp.get('sum_squares_many')?.calls, 1);
    assert.is(byOp.get('adamw_many')?.calls, 1);
    assert.is(byOp.get('adamw_step'), undefined);
    const gemms = ops.filter((o) => o.op.startsWith('gemm'));
    // The input-gradient GEMMs (with the adapter's dx riding on them): every projection of every
    // layer but the first layer's q, k and v; the down projection's with SwiGLU's backward pass on it.
    const count = (re: RegExp) => gemms.filter((g) => re.test(g.op)).reduce((n, g) => n + g.calls, 0);
    assert.is(count(/^gemm\+update(\+swiglu_backward)? NN/), 7 * L - 3);
    assert.is(count(/^gemm\+update\+swiglu_backward NN/), L);
    // SwiGLU's backward pass does not run on its own; its forward pass does.
    assert.is(byOp.get('swiglu_backward'), undefined);
    assert.is(byOp.get('swiglu_forward')?.calls, L);
    assert.ok(gemms.length > 3, 'GEMMs listed by shape');
    for (const g of gemms) {
      assert.match(g.op, /^gemm(_group|\+update)?(\+swiglu_backward)? [NT]{2} \d+x(\d+|\([\d+]+\))x\d+ (f32|bf16)( r\d+)?$/, g.op);
      assert.ok(g.flops > 0 && g.seconds > 0, `${g.op}: flops and time`);
    }
    for (const o of ops.filter((x) => !x.op.startsWith('gemm'))) assert.is(o.flops, 0, `${o.op}: no flops counted`);
    for (let i = 1; i < ops.length; i++) assert.ok(ops[i - 1]!.seconds >= ops[i]!.seconds, 'largest time first');
    assert.ok((await profiled.takeProfile()).some((o) => o.op === 'attention_forward'), 'the scoring call tallied');
    assert.equal(await profiled.takeProfile(), [], 'a take clears the tally');
    // The GEMM shapes of one step: the LM head's forward is M tokens x vocab x hidden.
    const T = seqs.length * 24;
    assert.ok(gemms.some((g) => g.op === `gemm NT ${T}x${config.vocabSize}x${config.hiddenSize} bf16`), 'LM head forward listed');

    let err: unknown;
    try { await plain.takeProfile(); } catch (e) { err = e; }
    assert.match(String(err), /not created with \{ profile: true \}/);
  } finally {
    await plain.dispose();
    await profiled.dispose();
  }
}));

test('a training pass split into two lanes: the profiled model runs them one after the other, with the plain model\'s bits', async () => {
  const plain = await tinyModel(false);
  const profiled = await tinyModel(true);
  try {
    await profiled.takeProfile();
    const a = await plain.trainStep(seqs, { mode: 'lora', lr: 1e-3 });
    const b = await profiled.trainStep(seqs, { mode: 'lora', lr: 1e-3 });
    assert.is(b.loss.get(0), a.loss.get(0), 'same loss');
    assert.is(b.gradNorm.get(0), a.gradNorm.get(0), 'same gradient norm');
    const ops = await profiled.takeProfile();
    assert.is((await profiled.score(seqs)).nll, (await plain.score(seqs)).nll, 'same weights after the step');
    const byOp = new Map(ops.map((o) => [o.op, o]));
    // Each lane runs its own pass over its sequence (its first norm, its LM head over its 24 rows);
    // the adapter's sequences lie in both lanes, so the second lane's sum of each of its 7 x L x 2
    // tensors' gradients is added to the first's.
    assert.is(byOp.get('rmsnorm_forward')?.calls, 2);
    assert.ok(ops.some((o) => o.op === `gemm NT 24x${config.vocabSize}x${config.hiddenSize} bf16`), 'a lane\'s LM head');
    assert.is(byOp.get('axpy')?.calls, 7 * config.numLayers * 2);
  } finally {
    await plain.dispose();
    await profiled.dispose();
  }
});

test('summariseProfile: per-step figures, shares, GFLOP/s and the host remainder', () => {
  const p = summariseProfile([
    { op: 'gemm NT 8x8x8 f32', calls: 4, seconds: 0.002, flops: 4e6 },
    { op: 'axpy', calls: 6, seconds: 0.001, flops: 0 },
  ], 2, 4, 'step');
  assert.is(p.step_ms, 2);
  assert.is(p.ops[0]!.calls_per_step, 2);
  assert.is(p.ops[0]!.ms_per_step, 1);
  assert.is(p.ops[0]!.share, 0.5);
  assert.is(p.ops[0]!.gflops, 2);
  assert.is(p.ops[1]!.gflops, null);
  assert.is(p.host_ms_per_step, 0.5);
  const text = formatProfile(p, 1);
  assert.match(text, /gemm NT 8x8x8 f32\s+2\.0\s+1\.000\s+50\.0%\s+2\.0/);
  assert.match(text, /\(1 more kinds\)\s+3\.0\s+0\.500\s+25\.0%/);
  assert.match(text, /host \(outside backend calls\)\s+0\.500\s+25\.0%/);
  assert.throws(() => summariseProfile([], 0, 1, 'step'), /positive/);
  assert.equal(mergeTimings([
    { op: 'a', calls: 1, seconds: 1, flops: 2 }, { op: 'b', calls: 1, seconds: 3, flops: 0 }, { op: 'a', calls: 2, seconds: 4, flops: 1 },
  ]), [{ op: 'a', calls: 3, seconds: 5, flops: 3 }, { op: 'b', calls: 1, seconds: 3, flops: 0 }]);
});

test('seal bench --profile: the JSON carries the profile, the table is printed without --json', () => {
  const seal = (...a: string[]) => spawnSync(process.execPath, [join(repoRoot, 'bin/seal.js'), ...a], { encoding: 'utf8', timeout: 120_000 });
  const args = ['bench', 'train', '--preset', 'tiny', '--batch', '1', '--seq', '16', '--repeats', '2', '--warmup', '1', '--profile'];
  const j = seal(...args, '--json');
  assert.is(j.status, 0, j.stderr);
  const r = JSON.parse(j.stdout.trim().split('\n').at(-1)!);
  assert.is(r.profile.steps, 2);
  assert.is(r.profile.unit, 'step');
  assert.ok(r.profile.ops.some((o: { op: string }) => o.op === 'attention_backward'));
  const shares = r.profile.ops.reduce((s: number, o: { share: number }) => s + o.share, 0) + r.profile.host_ms_per_step / r.profile.step_ms;
  assert.ok(Math.abs(shares - 1) < 1e-6, `shares and host add up to the step (${shares})`);
  const t = seal(...args);
  assert.is(t.status, 0, t.stderr);
  assert.match(t.stdout, /profile: 2 steps/);
  assert.match(t.stdout, /host \(outside backend calls\)/);
  const d = seal('bench', 'decode', '--preset', 'tiny', '--prompt', '4', '--new', '3', '--repeats', '1', '--warmup', '0', '--profile', '--json');
  assert.is(d.status, 0, d.stderr);
  const dr = JSON.parse(d.stdout.trim().split('\n').at(-1)!);
  assert.is(dr.profile.steps, 2, 'decoding steps after the prefill');
  assert.is(dr.profile.unit, 'decoding step');
  const ops = dr.profile.ops as { op: string; calls_per_step: number }[];
  assert.is(ops.find((o) => o.op === 'attention_cached_forward')?.calls_per_step, 4, 'one cached attention per layer per step');
  assert.not.ok(ops.some((o) => o.op === 'attention_forward'), 'the prefill is not in the profile');
});

test.run();
