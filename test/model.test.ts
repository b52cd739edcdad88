// Model API behaviour beyond PyTorch parity: real weights, save/load and PEFT round trips, mixed
// adapter batches, determinism, bf16 storage, and clear errors for bad batches.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { native } from '../lib/native.js';
import { Model, packSequences, type Sequence } from '../lib/model/model.js';
import { loadPeftAdapter, savePeftAdapter } from '../lib/model/peft.js';
import { withEnv } from '../lib/bench/env.js';
import { assertClose, fixturesDir, hasShared, readAllTensors, repoRoot, sharedDir } from './helpers/fixtures.js';

const llamaDir = join(repoRoot, 'test/fixtures/models/llama-gqa');
const qwenDir = join(repoRoot, 'test/fixtures/models/qwen2-bias');
const tinyStories = join(sharedDir, 'models/tinystories-656k');

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'sealkit-model-'));
}

function randomTokens(n: number, vocab: number, seed: number): number[] {
  let x = seed;
  return Array.from({ length: n }, () => {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    return (x >>> 8) % vocab;
  });
}

if (hasShared) {
  test('tinystories-656k: mean NLL on a fixed text equals PyTorch within 1e-4', async () => {
    const ref = JSON.parse(readFileSync(join(fixturesDir, 'parity/tinystories.json'), 'utf8')) as { nll_ids: number[]; nll_mean: number };
    const model = await Model.load(tinyStories);
    const r = await model.score([{ tokens: ref.nll_ids }]);
    assert.equal(r.tokens, ref.nll_ids.length - 1);
    assert.ok(Math.abs(r.nll - ref.nll_mean) < 1e-4, `nll ${r.nll} vs PyTorch ${ref.nll_mean}`);
    await model.dispose();
  });
} else {
  test.skip('tinystories-656k parity (../shared absent)', () => {});
  console.log('skip: ../shared/models/tinystories-656k is absent; real-weight parity not checked');
}

test('PEFT adapter written by the PyTorch fixture loads and reproduces its logits', async () => {
  const model = await Model.load(llamaDir);
  const cfg = await loadPeftAdapter(model, join(fixturesDir, 'parity/llama-gqa-adapter'), 3);
  assert.equal(cfg.rank, 4);
  const t = await readAllTensors(join(fixturesDir, 'parity/llama-gqa.safetensors'));
  const ids = Array.from(t.get('input_ids')!);
  const lens = Array.from(t.get('seq_lens')!);
  const seqs: Sequence[] = [];
  let off = 0;
  for (const len of lens) { seqs.push({ tokens: ids.slice(off, off + len), slot: 3 }); off += len; }
  const logits = await model.logits(seqs);
  const flat = new Float32Array(logits.reduce((a, l) => a + l.length, 0));
  let o = 0;
  for (const l of logits) { flat.set(l, o); o += l.length; }
  assertClose(flat, t.get('lora_logits')!, 2e-5, 1e-4, 'PEFT fixture adapter logits');
  await model.dispose();
});

test('PEFT round trip: save -> load gives identical logits; adapter_config matches PEFT fields', async () => {
  const dir = tmp();
  try {
    const model = await Model.load(qwenDir);
    model.createAdapter(0, { rank: 8, alpha: 16, targets: ['q_proj', 'v_proj', 'down_proj'], seed: 7 });
    // Train one step so B is non-zero.
    const seq = { tokens: randomTokens(24, model.config.vocabSize, 1), slot: 0 };
    await model.trainStep([seq], { mode: 'lora', lr: 1e-2 });
    const before = (await model.logits([seq]))[0]!;
    await savePeftAdapter(model, 0, dir, { baseModel: 'qwen2-bias' });
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(cfg.peft_type, 'LORA');
    assert.equal(cfg.r, 8);
    assert.equal(cfg.lora_alpha, 16);
    assert.equal(cfg.target_modules, ['q_proj', 'v_proj', 'down_proj']);
    await loadPeftAdapter(model, dir, 5);
    const after = (await model.logits([{ ...seq, slot: 5 }]))[0]!;
    assert.equal(Array.from(after), Array.from(before));
    await model.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('Model.save writes a loadable HF directory with identical logits (tied and untied)', async () => {
  for (const src of [llamaDir, qwenDir]) {
    const dir = tmp();
    try {
      const model = await Model.load(src);
      const seq = { tokens: randomTokens(17, model.config.vocabSize, 3) };
      await model.trainStep([seq], { mode: 'full', lr: 1e-3 });
      const before = (await model.logits([seq]))[0]!;
      await model.save(dir);
      const again = await Model.load(dir);
      const after = (await again.logits([seq]))[0]!;
      assert.equal(Array.from(after), Array.from(before), `round trip of ${src}`);
      await model.dispose();
      await again.dispose();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

test('mixed-adapter batch equals running each sequence alone (logits and gradients)', async () => {
  const model = await Model.load(llamaDir);
  const V = model.config.vocabSize;
  model.createAdapter(0, { rank: 4, alpha: 8, seed: 1 });
  model.createAdapter(1, { rank: 2, alpha: 4, targets: ['q_proj', 'up_proj'], seed: 2 });
  // Make B non-zero so adapters matter.
  for (const slot of [0, 1]) await model.trainStep([{ tokens: randomTokens(9, V, slot + 10), slot }], { mode: 'lora', lr: 5e-2 });
  const seqs: Sequence[] = [
    { tokens: randomTokens(11, V, 1), slot: 0 },
    { tokens: randomTokens(5, V, 2), slot: -1 },
    { tokens: randomTokens(13, V, 3), slot: 1 },
    { tokens: randomTokens(7, V, 4), slot: 0 },
  ];
  const together = await model.logits(seqs);
  for (let i = 0; i < seqs.length; i++) {
    const alone = (await model.logits([seqs[i]!]))[0]!;
    assertClose(together[i]!, alone, 1e-6, 1e-5, `sequence ${i} logits`);
  }
  // Gradients: a mixed batch gives each adapter the gradient it gets from its own sequences alone.
  const grad = async (batch: Sequence[], slot: number) => {
    await model.zeroGrad();
    const packedSlots = batch.map((s) => s.slot ?? -1);
    const lengths = batch.map((s) => s.tokens.length);
    const tokens = Int32Array.from(batch.flatMap((s) => Array.from(s.tokens)));
    const targets = new Int32Array(tokens.length).fill(-1);
    const weights = new Float32Array(tokens.length);
    let off = 0;
    const count = batch.filter((s) => s.slot === slot).reduce((a, s) => a + s.tokens.length - 1, 0);
    for (const s of batch) {
      for (let t = 0; t + 1 < s.tokens.length; t++) {
        targets[off + t] = s.tokens[t + 1]!;
        weights[off + t] = s.slot === slot ? 1 / count : 0;
      }
      off += s.tokens.length;
    }
    await model.backwardPacked({ tokens, targets, weights, seqLens: Int32Array.from(lengths), slots: Int32Array.from(packedSlots) });
    return model.getAdapterTensor(slot, 1, 'q_proj', 'A', true);
  };
  const mixed = await grad(seqs, 0);
  const alone = await grad(seqs.filter((s) => s.slot === 0), 0);
  assertClose(mixed, alone, 1e-7, 1e-4, 'slot 0 gradient mixed vs alone');
  await model.dispose();
});

// The model two training paths are compared on: LoRA with two adapters (dropout on one, the other
// on q and down only) on bf16 weights, or full training on f32.
async function trainingPair(mode: 'lora' | 'full'): Promise<Model> {
  const m = await Model.load(llamaDir, mode === 'lora' ? { storage: 'bf16' } : {});
  if (mode === 'lora') {
    m.createAdapter(0, { rank: 4, alpha: 8, dropout: 0.1, seed: 1 });
    m.createAdapter(1, { rank: 2, alpha: 4, targets: ['q_proj', 'down_proj'], seed: 2 });
  }
  return m;
}

// The trained weights of two trainingPair models, bit for bit: every base parameter (full), or both
// adapters' A and B on two projections of layer 1 (lora).
function assertSameTrained(a: Model, b: Model, mode: 'lora' | 'full'): void {
  if (mode === 'full') {
    for (const name of a.paramNames()) assert.equal(Array.from(a.getParam(name)), Array.from(b.getParam(name)), `full: ${name}`);
    return;
  }
  for (const slot of [0, 1])
    for (const proj of ['q_proj', 'down_proj'] as const)
      for (const which of ['A', 'B'] as const)
        assert.equal(Array.from(a.getAdapterTensor(slot, 1, proj, which)), Array.from(b.getAdapterTensor(slot, 1, proj, which)), `lora: slot ${slot} ${proj} ${which}`);
}

test('trainStep as one engine job: the losses, gradient norms and weights of backwardPacked then optimizerStep', async () => {
  // Two copies of one model take the same steps, one through the fused native call, one through the
  // two calls; LoRA with two adapters (per-slot learning rates, dropout) on bf16 weights, full
  // training on f32.
  for (const mode of ['lora', 'full'] as const) {
    const make = () => trainingPair(mode);
    const fused = await make();
    const split = await make();
    const V = fused.config.vocabSize;
    const full = mode === 'full';
    const stepOptions = { full, slots: full ? [] : [0, 1], lr: 2e-2, ...(full ? {} : { lrs: [2e-2, 5e-2] }), weightDecay: 0.01, maxGradNorm: 0.5 };
    for (let s = 0; s < 3; s++) {
      const seqs: Sequence[] = [
        { tokens: randomTokens(12 + s, V, s), slot: full ? -1 : 0 },
        { tokens: randomTokens(9, V, s + 20), slot: full ? -1 : 1 },
        { tokens: randomTokens(7, V, s + 40), slot: full ? -1 : 0 },
      ];
      const batch = packSequences(seqs, V, true).batch;
      const a = await fused.run((h) => h.trainStep(batch, { full, seed: s }, stepOptions));
      const bLoss = (await split.backwardPacked(batch, { full, seed: s })).loss;
      const bNorms = await split.optimizerStep(stepOptions);
      assert.equal(Array.from(a.loss ?? []), Array.from(bLoss ?? []), `${mode} step ${s}: losses`);
      assert.equal(a.norms, bNorms, `${mode} step ${s}: gradient norms`);
      assert.ok(a.norms.every((n) => n > 0), `${mode} step ${s}: norms ${a.norms}`);
    }
    assertSameTrained(fused, split, mode);
    await fused.dispose();
    await split.dispose();
  }
  // Bad step options fail before the job starts: no backward pass runs, so no gradient is left behind.
  const model = await Model.load(llamaDir);
  model.createAdapter(0, { rank: 4, alpha: 8, seed: 1 });
  const batch = packSequences([{ tokens: randomTokens(8, model.config.vocabSize, 1), slot: 0 }], model.config.vocabSize, true).batch;
  for (const [opts, re] of [[{ slots: [3], lr: 1e-2 }, /no adapter in slot 3/], [{ slots: [0] }, /lr/], [{ slots: [0], lr: 1, lrs: [1, 2] }, /one entry per slot/]] as const) {
    let message = '';
    try { await model.run((h) => h.trainStep(batch, {}, opts as never)); } catch (e) { message = (e as Error).message; }
    assert.match(message, re);
  }
  assert.ok(model.getAdapterTensor(0, 0, 'q_proj', 'A', true).every((g) => g === 0), 'no gradient after a refused trainStep');
  await model.dispose();
});

test('trainSteps: several steps in one engine call, with the results and weights of trainStep called step by step', async () => {
  // Two copies of one model take the same steps: one trainStep call per step, or all of them in one
  // trainSteps call. LoRA with two adapters whose steps differ (an adapter absent from a step,
  // per-slot learning rates, dropout, clipping) on bf16 weights; full training on f32.
  for (const mode of ['lora', 'full'] as const) {
    const make = () => trainingPair(mode);
    const one = await make();
    const many = await make();
    const V = one.config.vocabSize;
    const full = mode === 'full';
    const steps = Array.from({ length: 5 }, (_, s) => ({
      sequences: [
        { tokens: randomTokens(10 + s, V, s), slot: full ? -1 : 0, trainMask: Array.from({ length: 10 + s }, (_, t) => (t < 3 ? 0 : 1)) },
        ...(s % 2 === 0 ? [{ tokens: randomTokens(7, V, s + 30), slot: full ? -1 : 1 }] : []),
      ],
      options: { mode, lr: 2e-2, ...(full ? {} : { slotLr: new Map([[0, 2e-2 / (s + 1)], [1, 5e-2]]) }), weightDecay: 0.01, maxGradNorm: 0.5, seed: s },
    }));
    const stepwise: Awaited<ReturnType<Model["trainStep"]>>[] = [];
    for (const s of steps) stepwise.push(await one.trainStep(s.sequences, s.options));
    const batched = await many.trainSteps(steps);
    assert.equal(batched.length, steps.length);
    batched.forEach((r, i) => {
      assert.equal([...r.loss], [...stepwise[i]!.loss], `${mode} step ${i}: losses`);
      assert.equal([...r.gradNorm], [...stepwise[i]!.gradNorm], `${mode} step ${i}: gradient norms`);
      assert.equal(r.tokens, stepwise[i]!.tokens, `${mode} step ${i}: tokens`);
    });
    assertSameTrained(many, one, mode);
    await one.dispose();
    await many.dispose();
  }
  // Every step is checked before any runs: a bad later step refuses the call and leaves the adapter
  // as it was (no step applied, no gradient left); an empty list does nothing.
  const model = await Model.load(llamaDir);
  model.createAdapter(0, { rank: 4, alpha: 8, seed: 1 });
  const V = model.config.vocabSize;
  const before = Array.from(model.getAdapterTensor(0, 0, 'q_proj', 'B'));
  const good = { sequences: [{ tokens: randomTokens(8, V, 1), slot: 0 }], options: { mode: 'lora' as const, lr: 1e-2 } };
  const cases: [unknown, RegExp][] = [
    [{ sequences: [{ tokens: [1, V], slot: 0 }], options: { mode: 'lora', lr: 1e-2 } }, /step 1: .*outside the vocabulary/],
    [{ sequences: [{ tokens: randomTokens(8, V, 2), slot: 3 }], options: { mode: 'lora', lr: 1e-2 } }, /trainSteps: step 1: .*no adapter in slot 3/],
    [{ sequences: [{ tokens: randomTokens(8, V, 2), slot: 0 }], options: { mode: 'full', lr: 1e-2 } }, /step 1: .*full mode/],
  ];
  for (const [bad, re] of cases) {
    let message = '';
    try { await model.trainSteps([good, bad as typeof good]); } catch (e) { message = (e as Error).message; }
    assert.match(message, re);
  }
  assert.equal(await model.trainSteps([]), []);
  assert.equal(Array.from(model.getAdapterTensor(0, 0, 'q_proj', 'B')), before, 'no step applied by a refused call');
  assert.ok(model.getAdapterTensor(0, 0, 'q_proj', 'A', true).every((g) => g === 0), 'no gradient after a refused call');
  await model.dispose();
});

test('optimiser step of many adapters, one task per adapter on two threads: the bits of each adapter stepped across the pool', async () => {
  // Five adapters of different shapes and learning rates, clipped, in one batch: on a 2-thread pool
  // with pooled jobs the optimiser runs one adapter per task (cpu::optimizer_groups_per_task);
  // inline jobs (one thread) step them one after another. Norms and weights must be the same bits.
  const addon = native();
  const before = addon.info().threads;
  const run = async (profile: boolean) => {
    const model = await Model.load(llamaDir, { storage: 'bf16', profile });
    const V = model.config.vocabSize;
    for (let a = 0; a < 5; a++) model.createAdapter(a, { rank: 2 + a, alpha: 8, seed: 10 + a, ...(a % 2 ? { targets: ['q_proj', 'down_proj'] } : {}) });
    const norms: number[][] = [];
    for (let s = 0; s < 3; s++) {
      const seqs = Array.from({ length: 5 }, (_, a) => ({ tokens: randomTokens(9 + a, V, 100 * s + a), slot: a }));
      const r = await model.trainStep(seqs, { mode: 'lora', lr: 2e-2, slotLr: new Map([[3, 5e-2]]), maxGradNorm: 0.05, seed: s });
      norms.push([...r.gradNorm.values()]);
    }
    const weights = [0, 1, 2, 3, 4].map((a) => Array.from(model.getAdapterTensor(a, 1, 'q_proj', 'B')));
    const ops = profile ? (await model.takeProfile()).map((o) => o.op) : [];
    await model.dispose();
    return { norms, weights, ops };
  };
  try {
    addon.setThreads(2);
    const pooled = await withEnv({ SEALKIT_JOB_THREADING: 'pooled' }, () => run(false));
    const inlined = await withEnv({ SEALKIT_JOB_THREADING: 'inline' }, () => run(false));
    assert.ok(pooled.norms.flat().every((n) => n > 0.05), 'the clip is active');
    assert.equal(pooled.norms, inlined.norms, 'gradient norms');
    assert.equal(pooled.weights, inlined.weights, 'adapter weights');
    const profiled = await withEnv({ SEALKIT_JOB_THREADING: 'pooled' }, () => run(true));
    assert.equal(profiled.norms, pooled.norms, 'profiled: gradient norms');
    assert.ok(profiled.ops.includes('optimizer_step_groups') && !profiled.ops.includes('adamw_many'), `ops ${profiled.ops.join(', ')}`);
  } finally {
    addon.setThreads(before);
  }
});

test('LM head on the rows with a loss only: same losses and gradients as running it on every row', async () => {
  // Completion-only training masks each prompt; the head then runs on a compact block of the rows
  // that carry a loss (native/engine/model.cc, head_rows). SEALKIT_COMPACT_HEAD=0 runs it on every
  // row, the way it ran before; both must agree, in LoRA and full mode, across several 256-row chunks.
  const model = await Model.load(qwenDir);
  const V = model.config.vocabSize;
  model.createAdapter(0, { rank: 4, alpha: 8, seed: 3 });
  await model.trainStep([{ tokens: randomTokens(20, V, 77), slot: 0 }], { mode: 'lora', lr: 5e-2 });
  const lengths = [420, 9, 260, 180];
  const tokens = Int32Array.from(lengths.flatMap((n, i) => randomTokens(n, V, 200 + i)));
  const targets = new Int32Array(tokens.length).fill(-1);
  const weights = new Float32Array(tokens.length);
  let off = 0;
  lengths.forEach((n, i) => {
    const prompt = [300, 8, 0, 120][i]!;  // the second sequence has no loss at all
    for (let t = 0; t + 1 < n; t++) {
      targets[off + t] = tokens[off + t + 1]!;
      // masked prompts, a few fractional weights, and lone masked rows inside a completion
      weights[off + t] = t < prompt || (i === 2 && t % 17 === 5) ? 0 : i === 3 && t % 3 === 0 ? 0.25 : 1;
    }
    off += n;
  });
  const live = weights.reduce((a, w, t) => a + (w !== 0 && targets[t]! >= 0 ? 1 : 0), 0);
  assert.ok(live > 256 && live < tokens.length / 2, `${live} of ${tokens.length} rows carry a loss`);
  const seqLens = Int32Array.from(lengths);
  const run = async (full: boolean) => {
    await model.zeroGrad();
    const batch = { tokens, targets, weights, seqLens, slots: new Int32Array(lengths.length).fill(full ? -1 : 0) };
    const { loss } = await model.backwardPacked(batch, { full });
    const grads = full
      ? ['lm_head.weight', 'model.embed_tokens.weight', 'model.norm.weight', 'model.layers.1.mlp.down_proj.weight'].map((n) => model.getParam(n, true))
      : (['q_proj', 'down_proj'] as const).map((p) => model.getAdapterTensor(0, 1, p, 'B', true));
    const scored = await model.forwardPacked({ tokens, targets, seqLens, slots: batch.slots });
    return { loss: loss!, grads, scored: scored.loss! };
  };
  for (const full of [false, true]) {
    const compact = await run(full);
    const every = await withEnv({ SEALKIT_COMPACT_HEAD: '0' }, () => run(full));
    const what = full ? 'full' : 'LoRA';
    for (let t = 0; t < tokens.length; t++) {
      if (weights[t] === 0) assert.equal(compact.loss[t], 0, `${what}: row ${t} has no loss`);
      else assert.ok(Math.abs(compact.loss[t]! - every.loss[t]!) <= 1e-6, `${what}: loss of row ${t}: ${compact.loss[t]} vs ${every.loss[t]}`);
    }
    // Full mode sums dHead over a different grouping of rows (terms of order 1 cancelling to 1e-3).
    compact.grads.forEach((g, i) => assertClose(g, every.grads[i]!, full ? 1e-5 : 1e-7, full ? 1e-4 : 1e-5, `${what} gradient ${i}`));
    assertClose(compact.scored, every.scored, 1e-6, 0, `${what}: scoring losses`);
  }
  await model.dispose();
});

test('job threading: steps and scoring run inline give the bits of the pool; the model reports how its jobs ran', async () => {
  const addon = native();
  const before = addon.info().threads;
  const run = async () => {
    const model = await Model.load(llamaDir, { storage: 'bf16' });
    model.createAdapter(0, { rank: 4, alpha: 8, dropout: 0.1, seed: 3 });
    const V = model.config.vocabSize;
    const losses: number[] = [];
    for (let s = 0; s < 3; s++) {
      const r = await model.trainStep([{ tokens: randomTokens(21, V, s), slot: 0 }], { mode: 'lora', lr: 1e-2, seed: s });
      losses.push(r.loss.get(0)!);
    }
    const scores = await model.score([{ tokens: randomTokens(17, V, 9), slot: 0 }]);
    const a = model.getAdapterTensor(0, 1, 'up_proj', 'B');
    const samples = await model.generate([{ tokens: randomTokens(9, V, 4), slot: 0 }], { maxNewTokens: 12, n: 3, temperature: 1, seed: 7, eosTokenIds: [] });
    const rows = model.jobThreading();
    await model.dispose();
    return { losses, scores: Array.from(scores.sequences[0]!.logprobs), a: Array.from(a), samples: samples.map((c) => c.tokens), rows };
  };
  try {
    addon.setThreads(2);
    const pooled = await withEnv({ SEALKIT_JOB_THREADING: 'pooled' }, run);
    const inlined = await withEnv({ SEALKIT_JOB_THREADING: 'inline' }, run);
    assert.equal(inlined.losses, pooled.losses, 'losses');
    assert.equal(inlined.scores, pooled.scores, 'scores');
    assert.equal(inlined.a, pooled.a, 'adapter weights');
    assert.equal(inlined.samples, pooled.samples, 'sampled tokens');
    assert.equal(pooled.rows, [], 'a fixed way records nothing');
    const adaptive = await run();
    assert.equal(adaptive.losses, pooled.losses, 'adaptive: losses');
    const train = adaptive.rows.find((r) => r.kind === 'trainStep');
    assert.ok(train && train.tokensUpTo === 32 && train.jobs === 3, `trainStep row ${JSON.stringify(adaptive.rows)}`);
    assert.ok(adaptive.rows.some((r) => r.kind === 'forward' && r.tokensUpTo === 32 && r.jobs === 1), 'forward row');
    assert.ok(adaptive.rows.some((r) => r.kind === 'prefill') && adaptive.rows.some((r) => r.kind === 'decode'), 'generation rows');
    assert.equal(adaptive.samples, pooled.samples, 'adaptive: sampled tokens');
  } finally {
    addon.setThreads(before);
  }
});

// A small model's LoRA training pass runs as two lanes of sequences, each on one thread from the
// embeddings to its adapters' gradients (Model::split_point in native/engine/model.cc); an adapter
// with sequences in both lanes gets the second lane's sum added to the first's.
test('a training pass split into two lanes of sequences: the bits of the whole pass where each adapter lies in one lane, the same bits on any thread count', async () => {
  const addon = native();
  const before = addon.info().threads;
  const PROJS = ['q_proj', 'v_proj', 'down_proj'] as const;
  const make = async () => {
    const m = await Model.load(llamaDir, { storage: 'bf16' });
    m.createAdapter(0, { rank: 4, alpha: 8, seed: 1 });
    m.createAdapter(1, { rank: 2, alpha: 4, targets: ['q_proj', 'down_proj'], seed: 2 });
    return m;
  };
  const V = (await make()).config.vocabSize;
  // Two steps (the second with B non-zero), then each adapter's trained tensors and the last
  // pass's gradients on layer 1.
  const train = async (batches: Sequence[][], env: Record<string, string>) => withEnv(env, async () => {
    const m = await make();
    const steps = [];
    for (const [i, batch] of batches.entries()) steps.push(await m.trainStep(batch, { mode: 'lora', lr: 2e-2, seed: i }));
    await m.zeroGrad();
    await m.backwardPacked(packSequences(batches.at(-1)!, V, true).batch);
    const tensors: Record<string, number[]> = {};
    for (const slot of [0, 1])
      for (const proj of PROJS)
        for (const which of ['A', 'B'] as const) {
          if (slot === 1 && proj === 'v_proj') continue;
          tensors[`${slot} ${proj} ${which}`] = Array.from(m.getAdapterTensor(slot, 1, proj, which));
          tensors[`${slot} ${proj} ${which} grad`] = Array.from(m.getAdapterTensor(slot, 1, proj, which, true));
        }
    await m.dispose();
    return { losses: steps.map((r) => [r.loss.get(0), r.loss.get(1)]), norms: steps.map((r) => [r.gradNorm.get(0), r.gradNorm.get(1)]), tensors };
  });
  const seq = (n: number, seed: number, slot: number): Sequence => ({ tokens: randomTokens(n, V, seed), slot });
  // Each adapter in one lane (the cut evens the tokens: 14 + 8 | 16 + 9), then lanes of unequal
  // sequence counts (20 | 10 + 10). (A lane needs more than 16 rows: see split_point.)
  const apart = [[seq(14, 1, 0), seq(8, 2, 0), seq(16, 3, 1), seq(9, 4, 1)], [seq(20, 5, 0), seq(10, 6, 1), seq(10, 7, 1)]];
  // Beside adapter 1 (the cut keeps adapter 0's run of sequences in one lane), then adapter 0 alone,
  // in both lanes (the whole pass sums its gradients over all the batch's tokens at once, the lanes
  // over their halves).
  const across = [[seq(12, 8, 0), seq(12, 9, 0), seq(20, 10, 1)], [seq(20, 11, 0), seq(20, 13, 0)]];
  try {
    addon.setThreads(2);
    const whole = await train(apart, { SEALKIT_SPLIT_STEP: '0' });
    const split = await train(apart, { SEALKIT_SPLIT_STEP: '1' });
    assert.equal(split, whole, 'adapters in one lane each: the bits of the whole pass');
    // Across lanes, from the same weights (a first step run whole), adapter 0 alone: the losses come
    // from the forward pass, row by row, so they keep their bits; its gradients are its two lanes'
    // sums added, the same sums rounded otherwise. (Compared after further AdamW steps they would
    // not stay close: Adam's update of a gradient near zero turns on its rounding.)
    const once = async (env: Record<string, string>) => {
      const m = await make();
      await withEnv({ SEALKIT_SPLIT_STEP: '0' }, () => m.trainStep(across[0]!, { mode: 'lora', lr: 2e-2 }));
      await m.zeroGrad();
      const { loss } = await withEnv(env, () => m.backwardPacked(packSequences(across[1]!, V, true).batch));
      const grads = PROJS.map((proj) => Array.from(m.getAdapterTensor(0, 1, proj, 'A', true)).concat(Array.from(m.getAdapterTensor(0, 1, proj, 'B', true))));
      await m.dispose();
      return { loss: Array.from(loss!), grads };
    };
    const acrossWhole = await once({ SEALKIT_SPLIT_STEP: '0' });
    const acrossSplit = await once({ SEALKIT_SPLIT_STEP: '1' });
    assert.equal(acrossSplit.loss, acrossWhole.loss, 'across lanes: per-token losses');
    acrossWhole.grads.forEach((g, i) => {
      const scale = Math.max(...g.map(Math.abs));
      assertClose(acrossSplit.grads[i]!, g, 1e-5 * scale, 1e-4, `across lanes: adapter 0's ${PROJS[i]} gradients`);
    });
    // (and the lanes did run: some of those sums round otherwise)
    assert.ok(acrossWhole.grads.some((g, i) => g.some((x, j) => x !== acrossSplit.grads[i]![j])), 'across lanes: the pass was split');
    const acrossSteps = await train(across, { SEALKIT_SPLIT_STEP: '1' });
    // The lanes one after the other (one thread, a job run inline, more than two threads): the bits
    // of both at once.
    for (const [what, env] of [['inline job', { SEALKIT_SPLIT_STEP: '1', SEALKIT_JOB_THREADING: 'inline' }], ['pooled job', { SEALKIT_SPLIT_STEP: '1', SEALKIT_JOB_THREADING: 'pooled' }]] as const)
      assert.equal(await train(across, env), acrossSteps, `across lanes: ${what}`);
    // The lane done first helps the other with its kernels (LaneHelp): the first lane waits for
    // that help, so its whole pass runs on both threads; and without any help. The same bits.
    const helpedBefore = addon.info().laneHelpRuns;
    for (const [what, env] of [['helped', { SEALKIT_LANE_HELP: 'wait' }], ['unhelped', { SEALKIT_LANE_HELP: '0' }]] as const) {
      const lanes = { SEALKIT_SPLIT_STEP: '1', SEALKIT_JOB_THREADING: 'pooled', ...env };
      assert.equal(await train(across, lanes), acrossSteps, `across lanes: ${what}`);
      assert.equal(await train(apart, lanes), whole, `apart: ${what}`);
    }
    assert.ok(addon.info().laneHelpRuns > helpedBefore, 'the helped passes ran kernels on both threads');
    addon.setThreads(1);
    assert.equal(await train(across, { SEALKIT_SPLIT_STEP: '1' }), acrossSteps, 'across lanes: one thread');
    assert.equal(await train(apart, { SEALKIT_SPLIT_STEP: '1' }), whole, 'apart: one thread');
    // More than two threads: the lanes one after the other, each op on the whole pool.
    addon.setThreads(3);
    assert.equal(await train(across, { SEALKIT_SPLIT_STEP: '1' }), acrossSteps, 'across lanes: three threads');
  } finally {
    addon.setThreads(before);
  }
});

// SEAL's inner loop groups its jobs into batches as they come (and otherwise when a run resumes), so
// an adapter's training must not depend on what else its batch holds: in a batch that mixes adapters
// the cut keeps each adapter's run of sequences in one lane, and each adapter takes the whole pass's
// per-sequence paths there, even in a lane it has to itself.
test('a split pass over a batch that mixes adapters: each adapter the bits of the whole pass, wherever the cut falls', async () => {
  const m = await Model.load(llamaDir);
  const V = m.config.vocabSize;
  m.createAdapter(0, { rank: 4, alpha: 8, seed: 1 });
  m.createAdapter(1, { rank: 2, alpha: 4, seed: 2 });
  await withEnv({ SEALKIT_SPLIT_STEP: '0' }, () => m.trainStep([{ tokens: randomTokens(16, V, 1), slot: 0 }, { tokens: randomTokens(16, V, 2), slot: 1 }], { mode: 'lora', lr: 5e-2 }));
  const a0 = [randomTokens(20, V, 3), randomTokens(20, V, 4)];
  // Adapter 0's loss alone (weights 1/n on its targets, 0 on the others'), so its gradient does not
  // depend on the batch's other sequences.
  const grads = async (others: number[][], env: Record<string, string>) => {
    const seqs: Sequence[] = [...a0.map((tokens) => ({ tokens, slot: 0 })), ...others.map((tokens) => ({ tokens, slot: 1 }))];
    const { batch } = packSequences(seqs, V, true);
    const n = a0.reduce((k, q) => k + q.length - 1, 0);
    const rows0 = a0.reduce((k, q) => k + q.length, 0);
    const targets = batch.targets!;
    batch.weights = batch.weights!.map((_, i) => (i < rows0 && targets[i]! >= 0 ? 1 / n : 0));
    await m.zeroGrad();
    await withEnv(env, () => m.backwardPacked(batch));
    return (['q_proj', 'v_proj', 'down_proj'] as const).flatMap((proj) => (['A', 'B'] as const).map((ab) => Array.from(m.getAdapterTensor(0, 1, proj, ab, true))));
  };
  const whole = await grads([randomTokens(20, V, 5), randomTokens(20, V, 6)], { SEALKIT_SPLIT_STEP: '0' });
  assert.ok(whole.some((g) => g.some((x) => x !== 0)), 'gradients formed');
  // 40 | 40 tokens: adapter 0 has the first lane to itself.
  assert.equal(await grads([randomTokens(20, V, 5), randomTokens(20, V, 6)], { SEALKIT_SPLIT_STEP: '1' }), whole, 'a lane of its own');
  // 40 | 20: 20 | 40, inside adapter 0's run of sequences (which the whole pass sums at once), evens
  // the tokens as well and comes first; the cut keeps to the adapters' boundary.
  assert.equal(await grads([randomTokens(20, V, 7)], { SEALKIT_SPLIT_STEP: '1' }), whole, 'a shorter second lane');
  assert.equal(await grads([randomTokens(20, V, 7)], { SEALKIT_SPLIT_STEP: '0' }), whole, 'another batch, whole');
  await m.dispose();
});

test('determinism: same seed and thread count give identical bits for a training run', async () => {
  const run = async () => {
    const model = await Model.load(qwenDir);
    model.createAdapter(0, { rank: 4, alpha: 8, dropout: 0.1, seed: 99 });
    const V = model.config.vocabSize;
    const losses: number[] = [];
    for (let s = 0; s < 4; s++) {
      const r = await model.trainStep([{ tokens: randomTokens(30, V, s), slot: 0 }, { tokens: randomTokens(19, V, s + 50), slot: 0 }], { mode: 'lora', lr: 1e-2, seed: s });
      losses.push(r.loss.get(0)!);
    }
    const a = model.getAdapterTensor(0, 0, 'v_proj', 'A');
    await model.dispose();
    return { losses, a };
  };
  const addon = native();
  const before = addon.info().threads;
  try {
    for (const threads of [1, 2]) {
      addon.setThreads(threads);
      const x = await run();
      const y = await run();
      assert.equal(x.losses, y.losses, `losses with ${threads} threads`);
      assert.equal(Array.from(x.a), Array.from(y.a), `weights with ${threads} threads`);
    }
  } finally {
    addon.setThreads(before);
  }
});

test('LoRA dropout: training differs from no-dropout, and evaluation ignores dropout', async () => {
  const model = await Model.load(llamaDir);
  const V = model.config.vocabSize;
  model.createAdapter(0, { rank: 4, alpha: 8, seed: 5, dropout: 0.5 });
  model.createAdapter(1, { rank: 4, alpha: 8, seed: 5, dropout: 0 });
  const seq = randomTokens(12, V, 8);
  const l0 = await model.logits([{ tokens: seq, slot: 0 }]);
  const l1 = await model.logits([{ tokens: seq, slot: 1 }]);
  assert.equal(Array.from(l0[0]!), Array.from(l1[0]!), 'eval forward is the same with and without dropout');
  const r0 = await model.trainStep([{ tokens: seq, slot: 0 }], { mode: 'lora', lr: 1e-2, seed: 3 });
  const r1 = await model.trainStep([{ tokens: seq, slot: 1 }], { mode: 'lora', lr: 1e-2, seed: 3 });
  assert.ok(r0.gradNorm.get(0) !== r1.gradNorm.get(1), 'dropout changes the gradient');
  await model.dispose();
});

test('LoRA dropout on every projection where heads*head_dim exceeds hidden and intermediate (mistral-v5)', async () => {
  // Regression: the dropout scratch must hold the widest projection input (o_proj: heads*head_dim).
  const model = await Model.load(join(repoRoot, 'test/fixtures/models/mistral-v5'));
  const c = model.config;
  assert.ok(c.numHeads * c.headDim > Math.max(c.hiddenSize, c.intermediateSize));
  model.createAdapter(0, { rank: 4, alpha: 8, dropout: 0.2, seed: 3 });
  const r = await model.trainStep([{ tokens: randomTokens(40, c.vocabSize, 5), slot: 0 }], { mode: 'lora', lr: 1e-2, seed: 1 });
  assert.ok(Number.isFinite(r.loss.get(0)!));
  await model.dispose();
});

test('bf16 storage: logits within bf16 tolerance of f32; full training refuses bf16 weights', async () => {
  const f32 = await Model.load(llamaDir);
  const bf = await Model.load(llamaDir, { storage: 'bf16' });
  const seq = [{ tokens: randomTokens(20, f32.config.vocabSize, 4) }];
  const a = (await f32.logits(seq))[0]!;
  const b = (await bf.logits(seq))[0]!;
  // Weights rounded to 8 mantissa bits: relative error ~2^-9 per weight, accumulating over layers.
  assertClose(b, a, 5e-2, 5e-2, 'bf16 vs f32 logits');
  assert.not.throws(() => bf.createAdapter(0, { rank: 2, alpha: 4 }));
  let threw = false;
  try { await bf.trainStep(seq, { mode: 'full', lr: 1e-3 }); } catch (e) { threw = /f32/.test((e as Error).message); }
  assert.ok(threw, 'full training on bf16 storage must fail with a clear message');
  await f32.dispose();
  await bf.dispose();
});

test('bf16 weights packed ahead for the GEMM: the bits of packing per call; a changed weight is repacked', async () => {
  // Where the bf16 kernels run (avx512bf16: vdpbf16ps, or AMX tiles), the model packs each bf16
  // weight once per orientation on first use (native/engine/model.cc, packed_weight);
  // SEALKIT_PACKED_WEIGHTS=0 packs B per call as before. Scoring and a LoRA step must give the same
  // bits either way, and a weight set after its packed copy was made must be used as set (the copy
  // is dropped). SEALKIT_AMX=0 runs vdpbf16ps where the CPU has AMX; then AMX, whose strips are
  // padded to whole 16-pair blocks.
  await withEnv({ SEALKIT_AMX: '0' }, () => packedWeightsCase(native().info().isa === 'avx512bf16'));
  if (native().info().amx) await packedWeightsCase(true);
});

test('f32 weights packed ahead for the f32 kernel: the bits of packing per call; merging and full training repack', async () => {
  // An f32 model (the embedded toy models, full fine-tuning) packs each weight once per orientation
  // for the f32 kernel of the active ISA. The same checks as for bf16, then the two ways an f32
  // weight changes in place: merging an adapter into it and a full-training step. Either must leave
  // no stale copy: results equal those of a model that packs B per call.
  await packedWeightsCase(true, 'f32');
  for (const dir of [llamaDir, qwenDir]) {
    const V = (await Model.load(dir)).config.vocabSize;
    const seqs: Sequence[] = [{ tokens: randomTokens(37, V, 5) }, { tokens: randomTokens(24, V, 6) }];
    const run = async () => {
      const m = await Model.load(dir, { storage: 'f32' });
      m.createAdapter(0, { rank: 4, alpha: 8, seed: 11 });
      await m.trainStep(seqs.map((q) => ({ ...q, slot: 0 })), { mode: 'lora', lr: 5e-2, seed: 1 });
      const before = await m.logits(seqs);  // makes the packed copies
      await m.mergeAdapter(0);
      const merged = await m.logits(seqs);
      const losses: number[] = [];
      for (let i = 0; i < 3; i++) losses.push((await m.trainStep(seqs, { mode: 'full', lr: 1e-2, seed: i })).loss.get(-1) ?? NaN);
      const trained = await m.logits(seqs);
      await m.dispose();
      return { before, merged, losses, trained };
    };
    const packed = await run();
    const plain = await withEnv({ SEALKIT_PACKED_WEIGHTS: '0' }, run);
    for (const k of ['before', 'merged', 'trained'] as const)
      packed[k].forEach((l, i) => assert.equal(Array.from(l), Array.from(plain[k][i]!), `${dir}: logits ${k}, sequence ${i}`));
    assert.equal(packed.losses, plain.losses, `${dir}: full-training losses`);
    assert.ok(packed.merged.some((l, i) => l.some((x, j) => x !== packed.before[i]![j])), `${dir}: merging changed the logits`);
  }
});

async function packedWeightsCase(packs: boolean, storage: 'bf16' | 'f32' = 'bf16'): Promise<void> {
  for (const dir of [llamaDir, qwenDir]) {  // tied and untied LM head
    const load = async () => {
      const m = await Model.load(dir, { storage });
      m.createAdapter(0, { rank: 4, alpha: 8, seed: 7 });
      return m;
    };
    const plain = await load(), packed = await load();
    const V = plain.config.vocabSize;
    const seqs: Sequence[] = [{ tokens: randomTokens(40, V, 1), slot: 0 }, { tokens: randomTokens(27, V, 2), slot: 0 }];
    const run = async (m: Model) => {
      const logits = await m.logits(seqs);
      const step = await m.trainStep(seqs, { mode: 'lora', lr: 1e-2, seed: 1 });
      const tensors = (['q_proj', 'gate_proj', 'down_proj'] as const).flatMap((p) => [m.getAdapterTensor(0, 1, p, 'A'), m.getAdapterTensor(0, 0, p, 'B')]);
      return { logits, loss: step.loss.get(0)!, tensors };
    };
    const x = await withEnv({ SEALKIT_PACKED_WEIGHTS: '0' }, () => run(plain));
    const bytesBefore = packed.memoryBytes();
    const y = await run(packed);
    const grown = packed.memoryBytes() - bytesBefore;
    if (packs) assert.ok(grown > 0, `${dir}: packed copies are counted in memoryBytes (${grown})`);
    x.logits.forEach((l, i) => assert.equal(Array.from(y.logits[i]!), Array.from(l), `${dir}: logits of sequence ${i}`));
    assert.is(y.loss, x.loss, `${dir}: training loss`);
    x.tensors.forEach((t, i) => assert.equal(Array.from(y.tensors[i]!), Array.from(t), `${dir}: adapter tensor ${i} after the step`));

    // Change a projection and the LM head after their packed copies were made: the model must use
    // the new values, as a model that never packed them does.
    const head = packed.paramNames().includes('lm_head.weight') ? 'lm_head.weight' : 'model.embed_tokens.weight';
    const base = [{ tokens: randomTokens(45, V, 3) }];
    const fresh = await Model.load(dir, { storage });
    for (const name of ['model.layers.0.mlp.up_proj.weight', 'model.layers.1.self_attn.q_proj.weight', head]) {
      const changed = packed.getParam(name).map((v, i) => -1.5 * v + ((i % 7) - 3) * 1e-2);
      packed.setParam(name, changed);
      fresh.setParam(name, changed);
    }
    if (packs) assert.ok(packed.memoryBytes() < bytesBefore + grown, `${dir}: the stale copies are freed`);
    assert.equal(Array.from((await packed.logits(base))[0]!), Array.from((await fresh.logits(base))[0]!), `${dir}: logits after set_param`);
    for (const m of [plain, packed, fresh]) await m.dispose();
  }
}

test('scoring with q/k/v as one group and gate, up, SwiGLU as one call: the bits of the separate calls', async () => {
  // Forward-only batches whose adapters leave q, k, v alone hand their base GEMMs to the backend as
  // one group (native/engine/model.cc; on the vdpbf16ps kernel with packed weights the CPU runs them
  // as one GEMM across the three weights: native/cpu/gemm.cc, packed_group); those that leave gate
  // and up alone hand both projections and SwiGLU over as one call (gemm_gate_up_swiglu, which stores
  // neither product); those with adapters on gate or up hand up's GEMM (with its update) and SwiGLU
  // over as one call (gemm_up_swiglu, which stores act, not up), where the update rides on that GEMM.
  // SEALKIT_GROUPED_GEMM=0, SEALKIT_FUSED_GATE_UP=0 and SEALKIT_FUSED_UP_SWIGLU=0 run the calls one
  // by one: logits and scores must not move by a bit. The profile shows which path each batch took.
  for (const dir of [llamaDir, qwenDir]) {
    const model = await Model.load(dir, { storage: 'bf16', profile: true });
    model.createAdapter(0, { rank: 4, alpha: 8, seed: 3, targets: ['o_proj', 'down_proj'] });
    model.createAdapter(1, { rank: 4, alpha: 8, seed: 4, targets: ['v_proj'] });
    model.createAdapter(2, { rank: 4, alpha: 8, seed: 5 });  // every projection
    model.createAdapter(3, { rank: 4, alpha: 8, seed: 6, targets: ['gate_proj'] });
    // Adapters start with B = 0: make them change the output.
    const nudge = (slot: number, proj: 'o_proj' | 'v_proj' | 'up_proj') =>
      model.setAdapterTensor(slot, 1, proj, 'B', model.getAdapterTensor(slot, 1, proj, 'B').map((_, i) => ((i % 5) - 2) * 0.05));
    nudge(0, 'o_proj'); nudge(1, 'v_proj'); nudge(2, 'v_proj'); nudge(2, 'up_proj');
    model.setAdapterTensor(3, 1, 'gate_proj', 'B', model.getAdapterTensor(3, 1, 'gate_proj', 'B').map((_, i) => ((i % 5) - 2) * 0.05));
    const { vocabSize: V, numHeads, numKvHeads, headDim } = model.config;
    const qkvWidths = `(${numHeads * headDim}+${numKvHeads * headDim}+${numKvHeads * headDim})`;  // the group's profile name
    // what, batch, q/k/v grouped, gate/up/SwiGLU one call, up/SwiGLU one call
    const batches: [string, Sequence[], boolean, boolean, boolean][] = [
      ['no adapter', [{ tokens: randomTokens(40, V, 5) }, { tokens: randomTokens(29, V, 6) }], true, true, false],
      ['adapter on o, down', [{ tokens: randomTokens(33, V, 7), slot: 0 }, { tokens: randomTokens(21, V, 8) }], true, true, false],
      ['adapter on v', [{ tokens: randomTokens(33, V, 9), slot: 1 }, { tokens: randomTokens(25, V, 10) }], false, true, false],
      ['adapter on every projection', [{ tokens: randomTokens(31, V, 11), slot: 2 }], false, false, true],
      ['adapter on gate, up without', [{ tokens: randomTokens(27, V, 12), slot: 3 }], true, false, true],
      // Two adapters on up: its updates run as chains after its GEMM (their C is small).
      ['two adapters on up', [{ tokens: randomTokens(20, V, 13), slot: 2 }, { tokens: randomTokens(17, V, 14), slot: 3 }], false, false, false],
    ];
    for (const [what, seqs, grouped, oneCall, upCall] of batches) {
      await model.takeProfile();
      const fused = { logits: await model.logits(seqs), score: await model.score(seqs) };
      const ops = (await model.takeProfile()).map((t) => t.op);
      assert.is(ops.some((op) => op.startsWith('gemm_group') && op.includes(qkvWidths)), grouped, `${dir} ${what}: q/k/v grouped`);
      assert.is(ops.some((op) => op.startsWith('gate_up_swiglu')), oneCall, `${dir} ${what}: gate/up/SwiGLU one call`);
      assert.is(ops.some((op) => /^gemm(\+update)?\+swiglu /.test(op)), upCall, `${dir} ${what}: up/SwiGLU one call`);
      assert.is(ops.includes('swiglu_forward'), !oneCall && !upCall, `${dir} ${what}: SwiGLU apart`);
      const apart = await withEnv({ SEALKIT_GROUPED_GEMM: '0', SEALKIT_FUSED_GATE_UP: '0', SEALKIT_FUSED_UP_SWIGLU: '0' },
        async () => ({ logits: await model.logits(seqs), score: await model.score(seqs) }));
      fused.logits.forEach((l, i) => assert.equal(Array.from(l), Array.from(apart.logits[i]!), `${dir} ${what}: logits of sequence ${i}`));
      assert.equal(fused.score, apart.score, `${dir} ${what}: scores`);
    }
    await model.dispose();
  }
});

test('scoring on bf16 rows from the norms and SwiGLU: the bits of f32 rows', async () => {
  // Forward passes of more than 16 rows whose projections round their input to bf16 anyway (bf16
  // weights on the vdpbf16ps kernel) have the norms and SwiGLU write bf16 rows for the projections
  // that are their only readers (native/engine/model.cc, rows16; native/cpu/gemm.cc, A_bf16): q, k,
  // v unless one carries an adapter, gate and up likewise, down, and the LM head (whose rows the
  // compact head gathers as bf16). SEALKIT_BF16_ROWS=0 hands over f32 rows: logits, scores and
  // generated tokens must not move by a bit. The profile shows which producers wrote bf16 rows.
  const info = native().info();
  const takes = info.isa === 'avx512bf16' && !(info.amx && process.env['SEALKIT_AMX'] !== '0');
  for (const dir of [llamaDir, qwenDir]) {
    for (const storage of ['bf16', 'f32'] as const) {
      const model = await Model.load(dir, { storage, profile: true });
      model.createAdapter(0, { rank: 4, alpha: 8, seed: 3, targets: ['o_proj', 'down_proj'] });
      model.createAdapter(1, { rank: 4, alpha: 8, seed: 4, targets: ['v_proj', 'gate_proj'] });
      for (const [slot, proj] of [[0, 'down_proj'], [1, 'v_proj'], [1, 'gate_proj']] as const)
        model.setAdapterTensor(slot, 1, proj, 'B', model.getAdapterTensor(slot, 1, proj, 'B').map((_, i) => ((i % 5) - 2) * 0.05));
      const V = model.config.vocabSize;
      // what, batch, then which inputs go as bf16 rows: xn1 (q, k, v), xn2 (gate, up), act (down)
      const batches: [string, Sequence[], boolean, boolean, boolean][] = [
        ['no adapter', [{ tokens: randomTokens(40, V, 5) }, { tokens: randomTokens(29, V, 6) }], true, true, true],
        ['adapter on o, down', [{ tokens: randomTokens(33, V, 7), slot: 0 }, { tokens: randomTokens(21, V, 8) }], true, true, false],
        ['adapter on v, gate', [{ tokens: randomTokens(30, V, 9), slot: 1 }], false, false, false],
      ];
      const what = (w: string) => `${dir} ${storage} ${w}`;
      for (const [label, seqs, xn1, xn2, act] of batches) {
        await model.takeProfile();
        const rows = { logits: await model.logits(seqs), score: await model.score(seqs) };
        const ops = (await model.takeProfile()).map((t) => t.op);
        const on = takes && storage === 'bf16';
        assert.is(ops.some((op) => op.startsWith('gemm_group') && op.endsWith('A bf16 rows')), on && xn1, what(`${label}: q, k, v on bf16 rows`));
        assert.is(ops.some((op) => op.startsWith('gate_up_swiglu') && op.endsWith('A bf16 rows')), on && xn2, what(`${label}: gate, up on bf16 rows`));
        assert.is(ops.some((op) => op.startsWith('gate_up_swiglu_bf16')), on && act, what(`${label}: act as bf16 rows`));
        assert.is(ops.some((op) => op.startsWith('gemm NT') && op.includes(`x${V}x`) && op.endsWith('A bf16 rows')), on, what(`${label}: the LM head on bf16 rows`));
        const f32Rows = await withEnv({ SEALKIT_BF16_ROWS: '0' }, async () => ({ logits: await model.logits(seqs), score: await model.score(seqs) }));
        assert.not.ok((await model.takeProfile()).some((t) => t.op.includes('bf16 rows') || t.op.includes('_bf16')), what(`${label}: SEALKIT_BF16_ROWS=0`));
        rows.logits.forEach((l, i) => assert.equal(Array.from(l), Array.from(f32Rows.logits[i]!), what(`${label}: logits of sequence ${i}`)));
        assert.equal(rows.score, f32Rows.score, what(`${label}: scores`));
      }
      // A 24-token prompt's prefill (its last rows gathered for the head, in f32), then decoding.
      const prompts = [{ tokens: randomTokens(24, V, 15) }, { tokens: randomTokens(19, V, 16), slot: 0 }];
      const generate = () => model.generate(prompts, { maxNewTokens: 5, temperature: 0 }).then((cs) => cs.map((c) => Array.from(c.tokens)));
      assert.equal(await generate(), await withEnv({ SEALKIT_BF16_ROWS: '0' }, generate), what('generated tokens'));
      await model.dispose();
    }
  }
});

test("SwiGLU's backward pass on the down projection's dx GEMM: the gradients of the separate calls", async () => {
  // Where the down projection's input gradient (SwiGLU's dact) is complete after one GEMM (its
  // adapter's update rides on it, or no adapter adds to it after), the model hands the GEMM and
  // SwiGLU's backward pass to the backend as one call (native/engine/model.cc; the CPU then stores
  // dgate and dup from each tile and never dact: native/cpu/gemm.cc, gemm_swiglu_backward).
  // SEALKIT_FUSED_SWIGLU_BACKWARD=0 runs the calls one by one: losses and gradients must not move by
  // a bit. The profile shows which path each batch took, run whole (SEALKIT_SPLIT_STEP=0: a small
  // model's pass would otherwise run as two lanes of sequences, each with its own paths).
  await withEnv({ SEALKIT_SPLIT_STEP: '0' }, async () => { for (const dir of [llamaDir, qwenDir]) {
    const model = await Model.load(dir, { storage: 'bf16', profile: true });
    const V = model.config.vocabSize;
    model.createAdapter(0, { rank: 4, alpha: 8, seed: 3 });  // every projection
    model.createAdapter(1, { rank: 2, alpha: 4, seed: 4, targets: ['q_proj', 'v_proj'] });
    model.createAdapter(2, { rank: 4, alpha: 8, seed: 5, targets: ['down_proj'] });
    model.createAdapter(3, { rank: 4, alpha: 8, seed: 6, dropout: 0.2, targets: ['down_proj', 'up_proj'] });
    for (const slot of [0, 2, 3]) {  // adapters start with B = 0: make them add to dact
      model.setAdapterTensor(slot, 1, 'down_proj', 'B', model.getAdapterTensor(slot, 1, 'down_proj', 'B').map((_, i) => ((i % 5) - 2) * 0.05));
    }
    const cases: [string, Sequence[], string][] = [  // what, batch, the down projection's dx call
      ['adapter on every projection', [{ tokens: randomTokens(30, V, 1), slot: 0 }, { tokens: randomTokens(19, V, 2), slot: 0 }], 'gemm+update+swiglu_backward'],
      ['no adapter on down', [{ tokens: randomTokens(33, V, 3), slot: 1 }], 'gemm+swiglu_backward'],
      ['two adapters on down', [{ tokens: randomTokens(21, V, 4), slot: 0 }, { tokens: randomTokens(17, V, 5), slot: 2 }], 'swiglu_backward'],
      ['dropout on down', [{ tokens: randomTokens(26, V, 6), slot: 3 }], 'swiglu_backward'],
    ];
    const tensors = [[0, 'gate_proj', 'A'], [0, 'up_proj', 'B'], [0, 'down_proj', 'A'], [1, 'q_proj', 'B'], [2, 'down_proj', 'B'], [3, 'down_proj', 'A'], [3, 'up_proj', 'B']] as const;
    for (const [what, seqs, call] of cases) {
      const run = async () => {
        await model.zeroGrad();
        const { loss } = await model.backwardPacked(packSequences(seqs, V, true).batch, { seed: 9 });
        return { loss: Array.from(loss!), grads: tensors.map(([slot, proj, ab]) => Array.from(model.getAdapterTensor(slot, 1, proj, ab, true))) };
      };
      await model.takeProfile();
      const fused = await run();
      const ops = (await model.takeProfile()).map((t) => t.op);
      const taken = ops.some((op) => op.includes('swiglu_backward ')) ? ops.find((op) => op.includes('swiglu_backward '))!.split(' ')[0] : 'swiglu_backward';
      assert.is(taken, call, `${dir} ${what}: the path taken`);
      assert.is(ops.includes('swiglu_backward'), call === 'swiglu_backward', `${dir} ${what}: SwiGLU apart`);
      const apart = await withEnv({ SEALKIT_FUSED_SWIGLU_BACKWARD: '0' }, run);
      assert.equal(fused.loss, apart.loss, `${dir} ${what}: losses`);
      fused.grads.forEach((g, i) => assert.equal(g, apart.grads[i], `${dir} ${what}: gradient of ${tensors[i]!.join(' ')}`));
      assert.ok(fused.grads.some((g) => g.some((x) => x !== 0)), `${dir} ${what}: gradients formed`);
    }
    await model.dispose();
  } });
});

test('a batch that mixes adapters runs its LoRA products as chains: the bits of the calls one by one', async () => {
  // Each sequence's products (forward: xa, y += s xa B^T; backward: dB, dxa, dA, dx) run as one
  // chain on one thread and the sequences' chains as one backend call (native/cpu/gemm_chains.cc).
  // SEALKIT_GEMM_CHAINS=0 runs them call by call: losses, gradients, logits and generated tokens
  // must not move by a bit. The batch has an adapter twice, apart (its second chain must wait for
  // its first: both add to its gradients), a dropout adapter (not chained), a base-model sequence,
  // adapters of different ranks and targets.
  for (const [dir, storage] of [[llamaDir, 'f32'], [qwenDir, 'bf16']] as const) {
    const model = await Model.load(dir, { storage, profile: true });
    const V = model.config.vocabSize;
    model.createAdapter(0, { rank: 4, alpha: 8, seed: 3 });
    model.createAdapter(1, { rank: 2, alpha: 4, seed: 4, targets: ['q_proj', 'v_proj', 'down_proj'] });
    model.createAdapter(2, { rank: 8, alpha: 8, seed: 5 });
    model.createAdapter(3, { rank: 4, alpha: 8, seed: 6, dropout: 0.2 });
    model.createAdapter(4, { rank: 4, alpha: 16, seed: 7, targets: ['gate_proj', 'up_proj', 'o_proj'] });
    for (const slot of [0, 1, 2, 3, 4])  // adapters start with B = 0: make them matter
      for (const proj of ['q_proj', 'v_proj', 'down_proj', 'o_proj', 'up_proj'] as const)
        if (model.adapterInfo(slot)!.targets.includes(proj))
          model.setAdapterTensor(slot, 1, proj, 'B', model.getAdapterTensor(slot, 1, proj, 'B').map((_, i) => ((i % 7) - 3) * 0.03 * (slot + 1)));
    const seqs: Sequence[] = [
      { tokens: randomTokens(9, V, 1), slot: 0 }, { tokens: randomTokens(14, V, 2), slot: 1 },
      { tokens: randomTokens(7, V, 3), slot: -1 }, { tokens: randomTokens(5, V, 4), slot: 2 },
      { tokens: randomTokens(11, V, 5), slot: 0 }, { tokens: randomTokens(8, V, 6), slot: 3 },
      { tokens: randomTokens(12, V, 7), slot: 4 }, { tokens: randomTokens(3, V, 8), slot: 2 },
    ];
    const tensors = [[0, 'q_proj', 'A'], [0, 'down_proj', 'B'], [1, 'v_proj', 'A'], [2, 'gate_proj', 'B'], [2, 'q_proj', 'A'], [3, 'up_proj', 'A'], [4, 'o_proj', 'B']] as const;
    const run = async () => {
      await model.zeroGrad();
      const { loss } = await model.backwardPacked(packSequences(seqs, V, true).batch, { seed: 9 });
      const grads = tensors.map(([slot, proj, ab]) => Array.from(model.getAdapterTensor(slot, 1, proj, ab, true)));
      const logits = (await model.logits(seqs)).map((l) => Array.from(l));
      const prompts = seqs.map((q) => ({ tokens: Array.from(q.tokens).slice(0, 4), slot: q.slot }));
      const generated = (await model.generate(prompts, { maxNewTokens: 6, temperature: 0 })).map((c) => Array.from(c.tokens));
      return { loss: Array.from(loss!), grads, logits, generated };
    };
    await model.takeProfile();
    const chained = await run();
    const ops = (await model.takeProfile()).map((t) => t.op);
    assert.ok(ops.some((op) => op.startsWith('gemm_chains ') && op.includes('TN')), `${dir}: backward chains`);
    assert.ok(ops.some((op) => op.startsWith('gemm_chains ') && op.includes('NT')), `${dir}: forward chains`);
    const apart = await withEnv({ SEALKIT_GEMM_CHAINS: '0' }, run);
    assert.equal(chained.loss, apart.loss, `${dir}: losses`);
    chained.grads.forEach((g, i) => assert.equal(g, apart.grads[i], `${dir}: gradient of ${tensors[i]!.join(' ')}`));
    chained.grads.forEach((g, i) => assert.ok(g.some((x) => x !== 0), `${dir}: gradient of ${tensors[i]!.join(' ')} formed`));
    assert.equal(chained.logits, apart.logits, `${dir}: logits`);
    assert.equal(chained.generated, apart.generated, `${dir}: generated tokens`);
    await model.dispose();
  }
});

test('a batch mixing adapters of one rank adds their updates on the base GEMM\'s tiles: the bits of the chains', async () => {
  // With bf16 weights, when every adapter on a projection has the batch's rank (and, training, no
  // dropout) and the backend adds such updates inside the GEMM, the base GEMM can add each
  // sequence's y += s xa B^T (forward) and dx += dxa A (backward) on its own rows as one segmented
  // update (native/engine/model.cc, segmented_update): by default where C is 2 MB or more, with
  // SEALKIT_SEGMENTED_UPDATE=1 at any size (these fixtures' are small). f32 weights, and updates the
  // GEMM would run call by call (a sequence of 4 rows or fewer in the forward pass, decoding steps),
  // keep the chains; so does SEALKIT_SEGMENTED_UPDATE=0: losses, gradients, logits and generated
  // tokens must not move by a bit. The batches have an adapter twice, apart, a base-model sequence,
  // sequences that end inside a 14-row tile, adapters of different targets and scales, and one with
  // dropout (its projections keep the chains in training); the second adds a 3-token sequence.
  for (const [dir, storage] of [[qwenDir, 'bf16'], [llamaDir, 'bf16'], [llamaDir, 'f32']] as const) {
    const model = await Model.load(dir, { storage, profile: true });
    const V = model.config.vocabSize;
    model.createAdapter(0, { rank: 4, alpha: 8, seed: 3 });
    model.createAdapter(1, { rank: 4, alpha: 4, seed: 4, targets: ['q_proj', 'v_proj', 'down_proj'] });
    model.createAdapter(2, { rank: 4, alpha: 16, seed: 5 });
    model.createAdapter(3, { rank: 4, alpha: 8, seed: 6, dropout: 0.2, targets: ['o_proj', 'up_proj'] });
    for (const slot of [0, 1, 2, 3])  // adapters start with B = 0: make them matter
      for (const proj of ['q_proj', 'v_proj', 'down_proj', 'o_proj', 'up_proj'] as const)
        if (model.adapterInfo(slot)!.targets.includes(proj))
          for (const layer of [0, 1])
            model.setAdapterTensor(slot, layer, proj, 'B', model.getAdapterTensor(slot, layer, proj, 'B').map((_, i) => ((i % 7) - 3) * 0.03 * (slot + 1)));
    const long: Sequence[] = [
      { tokens: randomTokens(19, V, 1), slot: 0 }, { tokens: randomTokens(23, V, 2), slot: 1 },
      { tokens: randomTokens(7, V, 3), slot: -1 }, { tokens: randomTokens(9, V, 4), slot: 2 },
      { tokens: randomTokens(30, V, 5), slot: 0 }, { tokens: randomTokens(17, V, 6), slot: 3 },
      { tokens: randomTokens(12, V, 7), slot: 2 },
    ];
    const batches: [string, Sequence[], boolean][] = [  // what, batch, forward updates on the tiles
      ['long sequences', long, true],
      ['a 3-token sequence', [...long.slice(0, 3), { tokens: randomTokens(3, V, 8), slot: 2 }, ...long.slice(4)], false],
    ];
    const tensors = [[0, 'q_proj', 'A'], [0, 'down_proj', 'B'], [1, 'v_proj', 'A'], [2, 'gate_proj', 'B'], [2, 'o_proj', 'A'], [3, 'up_proj', 'A'], [3, 'o_proj', 'B']] as const;
    const segmentedOps = async () => (await model.takeProfile()).map((t) => t.op).filter((op) => / x\d+ segments$/.test(op));
    for (const [what, seqs, forwardOnTiles] of batches) {
      const label = `${dir} ${storage} ${what}`;
      const run = async () => {
        await model.zeroGrad();
        const { loss } = await model.backwardPacked(packSequences(seqs, V, true).batch, { seed: 9 });
        const grads = tensors.map(([slot, proj, ab]) => Array.from(model.getAdapterTensor(slot, 1, proj, ab, true)));
        const logits = (await model.logits(seqs)).map((l) => Array.from(l));
        return { loss: Array.from(loss!), grads, logits };
      };
      await model.takeProfile();
      const segmented = await withEnv({ SEALKIT_SEGMENTED_UPDATE: '1' }, run);
      const onTiles = await segmentedOps();
      const bf16 = storage === 'bf16';
      assert.is(onTiles.some((op) => op.startsWith('gemm+update NT')), bf16 && forwardOnTiles, `${label}: forward updates on the tiles`);
      assert.is(onTiles.some((op) => op.startsWith('gemm+update NN')), bf16, `${label}: backward updates on the tiles`);
      assert.is(onTiles.some((op) => op.startsWith('gemm+update+swiglu_backward NN')), bf16, `${label}: SwiGLU's backward pass with them`);
      assert.is(onTiles.some((op) => op.startsWith('gemm+update+swiglu NT')), bf16 && forwardOnTiles, `${label}: scoring's SwiGLU with up's`);
      const chained = await withEnv({ SEALKIT_SEGMENTED_UPDATE: '0' }, run);
      assert.equal(await segmentedOps(), [], `${label}: switched off`);
      await run();
      assert.equal(await segmentedOps(), [], `${label}: by default not for a C this small`);
      assert.equal(segmented.loss, chained.loss, `${label}: losses`);
      segmented.grads.forEach((g, i) => assert.equal(g, chained.grads[i], `${label}: gradient of ${tensors[i]!.join(' ')}`));
      segmented.grads.forEach((g, i) => assert.ok(g.some((x) => x !== 0), `${label}: gradient of ${tensors[i]!.join(' ')} formed`));
      assert.equal(segmented.logits, chained.logits, `${label}: logits`);
    }
    // Decoding steps (a row per sequence) and 4-token prefills keep the chains.
    const prompts = long.map((q) => ({ tokens: Array.from(q.tokens).slice(0, 4), slot: q.slot }));
    const generate = () => model.generate(prompts, { maxNewTokens: 6, temperature: 0 }).then((cs) => cs.map((c) => Array.from(c.tokens)));
    await model.takeProfile();
    const generated = await withEnv({ SEALKIT_SEGMENTED_UPDATE: '1' }, generate);
    assert.equal(await segmentedOps(), [], `${dir} ${storage}: generation keeps the chains`);
    assert.equal(generated, await withEnv({ SEALKIT_SEGMENTED_UPDATE: '0' }, generate), `${dir} ${storage}: generated tokens`);
    await model.dispose();
  }
});

test('adapters reuse the buffers of dropped ones: the same training as on a fresh model, memory within the peak', async () => {
  // SEAL's inner loop creates and drops groups of adapters; a new adapter takes the buffers (weights,
  // gradients, AdamW moments) a dropped one of the same shapes left (native/engine/model.cc,
  // take_f32), zeroed. Its training must match an adapter on a model that never had one, to the
  // bit (a moment or gradient left over would change the first step), and live and kept buffers
  // together never exceed the most adapter memory that was live at once.
  const train = async (m: Model, slots: number[], seedBase: number) => {
    const V = m.config.vocabSize;
    const seqs: Sequence[] = slots.map((slot, i) => ({ tokens: randomTokens(12 + i, V, seedBase + i), slot }));
    for (let i = 0; i < 3; i++) await m.trainStep(seqs, { mode: 'lora', lr: 1e-2, seed: i });
    return slots.map((slot) => (['q_proj', 'down_proj'] as const).flatMap((p) => [Array.from(m.getAdapterTensor(slot, 1, p, 'A')), Array.from(m.getAdapterTensor(slot, 0, p, 'B'))]));
  };
  const model = await Model.load(llamaDir);
  const create = (slots: number[], seed: number) => slots.forEach((slot, i) => model.createAdapter(slot, { rank: 4, alpha: 8, seed: seed + i }));
  const base = model.memoryBytes();
  create([0, 1, 2], 10);
  await train(model, [0, 1, 2], 100);
  const peak = model.memoryBytes();
  for (const slot of [0, 1, 2]) model.dropAdapter(slot);
  assert.is(model.memoryBytes(), peak, 'dropped adapters\' buffers kept for reuse');
  create([5, 6], 20);  // fewer than before: two from the kept buffers
  const reused = await train(model, [5, 6], 200);
  assert.is(model.memoryBytes(), peak, 'live and kept buffers within the peak');
  model.createAdapter(7, { rank: 2, alpha: 4, seed: 30 });  // other shapes: new buffers, and the peak grows
  assert.ok(model.memoryBytes() > peak, 'an adapter of other shapes allocates');
  for (const slot of [5, 6, 7]) model.dropAdapter(slot);
  assert.ok(model.memoryBytes() > base, 'kept for reuse');

  const fresh = await Model.load(llamaDir);
  [5, 6].forEach((slot, i) => fresh.createAdapter(slot, { rank: 4, alpha: 8, seed: 20 + i }));
  const alone = await train(fresh, [5, 6], 200);
  assert.equal(reused, alone, 'training on reused buffers gives the bits of fresh ones');
  for (const m of [model, fresh]) await m.dispose();
});

test('KV caches reuse the buffers of finished generations: the tokens and logits of a fresh model', async () => {
  // Each generation takes its KV cache from the buffers earlier ones left (sizes rounded to a class,
  // so nearby lengths share them), zeroed. A generation on reused buffers must give the tokens and
  // logits it gives on a model that never generated, and the kept buffers stay within the peak.
  const model = await Model.load(llamaDir);
  const V = model.config.vocabSize;
  const prompts = (seed: number, n: number) => Array.from({ length: n }, (_, i) => ({ tokens: randomTokens(6 + i, V, seed + i) }));
  const options = { maxNewTokens: 9, temperature: 0, withLogits: true, eosTokenIds: [] };
  await model.generate(prompts(1, 4), { ...options, maxNewTokens: 12 });
  const afterFirst = model.memoryBytes();
  const reused = await model.generate(prompts(50, 4), options);  // a little shorter: the same size class
  assert.is(model.memoryBytes(), afterFirst, 'the second cache reused the first one\'s buffers');
  const fresh = await Model.load(llamaDir);
  const alone = await fresh.generate(prompts(50, 4), options);
  assert.equal(reused.map((c) => c.tokens), alone.map((c) => c.tokens), 'tokens');
  reused.forEach((c, i) => c.logits!.forEach((l, t) => assert.equal(Array.from(l), Array.from(alone[i]!.logits![t]!), `logits ${i}/${t}`)));
  for (const m of [model, fresh]) await m.dispose();
});

test('bad batches give clear errors, never a crash', async () => {
  const model = await Model.load(llamaDir);
  const V = model.config.vocabSize;
  const cases: [() => Promise<unknown>, RegExp][] = [
    [() => model.score([{ tokens: [1, V + 5] }]), /outside the vocabulary/],
    [() => model.score([{ tokens: [] }]), /empty/],
    [() => model.score([{ tokens: [1, 2, 3], slot: 9 }]), /slot 9/],
    [() => model.forwardPacked({ tokens: new Int32Array([1, 2]), seqLens: new Int32Array([3]), slots: new Int32Array([-1]) }), /sum to 3/],
    [() => model.forwardPacked({ tokens: new Int32Array([1, 2]), seqLens: new Int32Array([2]), slots: new Int32Array([-1, -1]) }), /one per sequence/],
    [() => model.trainStep([{ tokens: [1, 2, 3] }], { mode: 'lora', lr: 1 }), /adapter slot/],
    [() => model.forwardPacked({ tokens: [1, 2] as unknown as Int32Array, seqLens: new Int32Array([2]), slots: new Int32Array([-1]) }), /Int32Array/],
  ];
  for (const [fn, re] of cases) {
    let msg = '';
    try { await fn(); } catch (e) { msg = (e as Error).message; }
    assert.match(msg, re);
  }
  assert.throws(() => model.createAdapter(0, { rank: 0, alpha: 1 }), /rank/);
  assert.throws(() => model.createAdapter(0, { rank: 2, alpha: 1, targets: ['nope' as 'q_proj'] }), /unknown target/);
  await model.dispose();
  await model.dispose(); // idempotent
  let msg = '';
  try { await model.score([{ tokens: [1, 2] }]); } catch (e) { msg = (e as Error).message; }
  assert.match(msg, /disposed/);
});

test('calls without await are queued, not rejected as busy', async () => {
  const model = await Model.load(llamaDir);
  const seqs = [{ tokens: randomTokens(15, model.config.vocabSize, 9) }];
  const results = await Promise.all([model.score(seqs), model.score(seqs), model.score(seqs)]);
  assert.equal(results[0]!.nll, results[2]!.nll);
  await model.dispose();
});

test.run();
