// Model-level parity of the CUDA backend against the CPU backend: the same decoder code
// (native/engine/model.cc) on both, for the three fixture models (llama GQA + llama3 rope + tied
// head, qwen2 with q/k/v bias, mistral with v5 rope and head_dim 24): logits, losses, LoRA gradients
// (with and without dropout), 10-step LoRA and full-parameter AdamW trajectories, and bf16 storage.
//
// Tolerances (measured as max |cuda - cpu| / max |cpu| per tensor unless said otherwise): every
// kernel is f32 on both backends (f32 weights take the GPU's plain-f32 GEMM), so differences are
// float rounding of different summation orders, ~1e-6. Logits 1e-4; per-token losses 1e-4 absolute;
// gradients 1e-3 (small tensors of a tiny model can have a largest entry not much above the
// rounding noise of their sum); 10-step trajectories 1e-4 absolute on the losses (AdamW's early
// steps divide by sqrt(v) with v tiny, which amplifies rounding, as in test/parity.test.ts).
// bf16 storage: the GPU runs bf16-weight GEMMs on tensor cores with activations rounded to bf16,
// the CPU in f32 with widened weights, so logits agree to ~1e-2 of their norm (3e-2 allowed).
//
// Skipped with a message when the addon has no CUDA or no GPU is present.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { native } from '../lib/native.js';
import { Model } from '../lib/model/model.js';
import { PROJ_NAMES, type PackedBatch, type ProjName } from '../lib/model/native-model.js';
import { learningRate } from '../lib/model/schedule.js';
import { fixturesDir, readAllTensors, repoRoot } from './helpers/fixtures.js';

const CASES = ['llama-gqa', 'qwen2-bias', 'mistral-v5'];

async function whyUnavailable(): Promise<string | undefined> {
  if (!native().info().cuda) return 'the addon was built without CUDA (npm run build:cuda)';
  try {
    const m = await Model.load(join(repoRoot, 'test/fixtures/models/llama-gqa'), { device: 'cuda' });
    await m.dispose();
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
  return undefined;
}
const skipReason = await whyUnavailable();
if (skipReason) console.log(`cuda-model: every test skipped: ${skipReason}`);
const gpuTest = skipReason ? test.skip : test;

const worst = new Map<string, number>();
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.is(a.length, b.length, 'length');
  let diff = 0;
  let ref = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (!Number.isFinite(x) || !Number.isFinite(y)) return Infinity;
    diff = Math.max(diff, Math.abs(x - y));
    ref = Math.max(ref, Math.abs(y));
  }
  return diff === 0 ? 0 : diff / Math.max(ref, 1e-30);
}
function close(what: string, group: string, a: ArrayLike<number>, b: ArrayLike<number>, tol: number): void {
  const e = relErr(a, b);
  worst.set(group, Math.max(worst.get(group) ?? 0, e));
  assert.ok(e <= tol, `${what}: relative error ${e.toExponential(3)} > ${tol}`);
}
function closeAbs(what: string, group: string, a: ArrayLike<number>, b: ArrayLike<number>, tol: number): void {
  assert.is(a.length, b.length, `${what} length`);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  worst.set(group, Math.max(worst.get(group) ?? 0, d));
  assert.ok(d <= tol, `${what}: max abs difference ${d.toExponential(3)} > ${tol}`);
}

function lcg(seed: number) {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 4294967296;
  };
}

// The fixture's own packed batch, plus a larger random one with sequences of length 1..300.
interface TestBatch { label: string; batch: PackedBatch; mask: Float32Array }
async function batches(name: string, vocab: number): Promise<[TestBatch, TestBatch]> {
  const t = await readAllTensors(join(fixturesDir, 'parity', `${name}.safetensors`));
  const mask = t.get('loss_mask') as Float32Array;
  const sum = mask.reduce((a, b) => a + b, 0);
  const fixture: PackedBatch = {
    tokens: t.get('input_ids') as Int32Array,
    seqLens: t.get('seq_lens') as Int32Array,
    slots: new Int32Array((t.get('seq_lens') as Int32Array).length).fill(-1),
    targets: t.get('targets') as Int32Array,
    weights: mask.map((m) => m / sum),
  };
  const r = lcg(7);
  const lens = [1, 97, 300, 33, 64, 2, 129];
  const T = lens.reduce((a, b) => a + b, 0);
  const tokens = Int32Array.from({ length: T }, () => Math.floor(r() * vocab));
  const targets = new Int32Array(T).fill(-1);
  const rmask = new Float32Array(T);
  let off = 0;
  for (const len of lens) {
    for (let i = 0; i + 1 < len; i++) {
      targets[off + i] = tokens[off + i + 1]!;
      rmask[off + i] = r() < 0.9 ? 1 : 0;
    }
    off += len;
  }
  const rsum = rmask.reduce((a, b) => a + b, 0);
  const random: PackedBatch = {
    tokens, seqLens: Int32Array.from(lens), slots: new Int32Array(lens.length).fill(-1), targets, weights: rmask.map((m) => m / rsum),
  };
  return [{ label: 'fixture batch', batch: fixture, mask }, { label: 'random batch (lengths 1..300)', batch: random, mask: rmask }];
}

const meanLoss = (loss: Float32Array, mask: Float32Array) => loss.reduce((a, l, i) => a + l * (mask[i] ?? 0), 0) / mask.reduce((a, b) => a + b, 0);
const withSlot = (b: PackedBatch, slot: number): PackedBatch => ({ ...b, slots: new Int32Array(b.slots.length).fill(slot) });

async function pair(name: string, storage: 'f32' | 'bf16' = 'f32') {
  const dir = join(repoRoot, 'test/fixtures/models', name);
  const cpu = await Model.load(dir, { device: 'cpu', storage });
  const cuda = await Model.load(dir, { device: 'cuda', storage });
  return { cpu, cuda, both: [cpu, cuda] as const };
}

// Same adapter on both models: A from the same seed (same counter RNG on both backends, checked
// below), B set to the same non-zero random values so every gradient is non-trivial.
function installAdapter(models: readonly Model[], slot: number, dropout: number, targets: readonly ProjName[] = PROJ_NAMES): void {
  const r = lcg(1234 + slot);
  const rank = 4;
  for (const m of models) m.createAdapter(slot, { rank, alpha: 8, dropout, seed: 99, targets });
  for (let l = 0; l < models[0]!.config.numLayers; l++) {
    for (const p of targets) {
      const n = models[0]!.getAdapterTensor(slot, l, p, 'B').length;
      const B = Float32Array.from({ length: n }, () => (r() - 0.5) * 0.1);
      for (const m of models) m.setAdapterTensor(slot, l, p, 'B', B);
    }
  }
  for (let l = 0; l < models[0]!.config.numLayers; l++)
    for (const p of targets)
      assert.equal(models[1]!.getAdapterTensor(slot, l, p, 'A'), models[0]!.getAdapterTensor(slot, l, p, 'A'), `adapter A init ${l}.${p}`);
}

for (const name of CASES) {
  gpuTest(`${name}: logits and losses match the CPU backend`, async () => {
    const { cpu, cuda } = await pair(name);
    for (const { label, batch, mask } of await batches(name, cpu.config.vocabSize)) {
      const a = await cpu.forwardPacked(batch, { logits: true });
      const b = await cuda.forwardPacked(batch, { logits: true });
      close(`${name} ${label} logits`, 'logits', b.logits!, a.logits!, 1e-4);
      closeAbs(`${name} ${label} per-token loss`, 'loss (abs)', b.loss!, a.loss!, 1e-4);
      closeAbs(`${name} ${label} mean loss`, 'loss (abs)', [meanLoss(b.loss!, mask)], [meanLoss(a.loss!, mask)], 1e-5);
    }
    await cpu.dispose();
    await cuda.dispose();
  });

  for (const dropout of [0, 0.1]) {
    gpuTest(`${name}: LoRA gradients match the CPU backend (dropout ${dropout})`, async () => {
      const { cpu, cuda, both } = await pair(name);
      const targets = PROJ_NAMES;
      installAdapter(both, 0, dropout, targets);
      for (const { label, batch } of await batches(name, cpu.config.vocabSize)) {
        const lb = withSlot(batch, 0);
        const a = await cpu.backwardPacked(lb, { seed: 5 });
        const b = await cuda.backwardPacked(lb, { seed: 5 });
        closeAbs(`${name} ${label} lora loss`, 'loss (abs)', b.loss!, a.loss!, 1e-4);
        for (let l = 0; l < cpu.config.numLayers; l++)
          for (const p of targets)
            for (const w of ['A', 'B'] as const)
              close(`${name} ${label} grad ${l}.${p}.${w}`, 'lora grads', cuda.getAdapterTensor(0, l, p, w, true),
                cpu.getAdapterTensor(0, l, p, w, true), 1e-3);
        await cpu.zeroGrad();
        await cuda.zeroGrad();
      }
      await cpu.dispose();
      await cuda.dispose();
    });
  }

  gpuTest(`${name}: full-parameter gradients match the CPU backend`, async () => {
    const { cpu, cuda } = await pair(name);
    const [{ batch }, { batch: big }] = await batches(name, cpu.config.vocabSize);
    for (const b of [batch, big]) {
      await cpu.backwardPacked(b, { full: true });
      await cuda.backwardPacked(b, { full: true });
      for (const p of cpu.paramNames()) close(`${name} grad ${p}`, 'full grads', cuda.getParam(p, true), cpu.getParam(p, true), 1e-3);
      await cpu.zeroGrad();
      await cuda.zeroGrad();
    }
    await cpu.dispose();
    await cuda.dispose();
  });

  gpuTest(`${name}: 10-step LoRA and full-parameter AdamW trajectories match the CPU backend`, async () => {
    const meta = JSON.parse(readFileSync(join(fixturesDir, 'parity', `${name}.json`), 'utf8')) as {
      lora_trajectory: { lr: number; betas: [number, number]; eps: number; weight_decay: number };
      full_trajectory: { lr: number; betas: [number, number]; eps: number; weight_decay: number; warmup_steps: number; steps: number };
    };
    const { cpu, cuda, both } = await pair(name);
    const [, { batch, mask }] = await batches(name, cpu.config.vocabSize);
    installAdapter(both, 0, 0);
    const lt = meta.lora_trajectory;
    const losses: number[][] = [[], []];
    for (let s = 0; s < 10; s++) {
      for (const [i, m] of both.entries()) {
        const { loss } = await m.backwardPacked(withSlot(batch, 0));
        losses[i]!.push(meanLoss(loss!, mask));
        await m.optimizerStep({ slots: [0], lr: lt.lr, beta1: lt.betas[0], beta2: lt.betas[1], eps: lt.eps, weightDecay: lt.weight_decay, maxGradNorm: 1 });
      }
    }
    closeAbs(`${name} LoRA trajectory`, 'trajectory loss (abs)', losses[1]!, losses[0]!, 1e-4);
    for (const m of both) m.dropAdapter(0);
    const ft = meta.full_trajectory;
    const full: number[][] = [[], []];
    for (let s = 1; s <= ft.steps; s++) {
      const lr = learningRate({ kind: 'cosine', lr: ft.lr, total: ft.steps, warmup: ft.warmup_steps }, s);
      for (const [i, m] of both.entries()) {
        const { loss } = await m.backwardPacked(batch, { full: true });
        full[i]!.push(meanLoss(loss!, mask));
        await m.optimizerStep({ full: true, lr, beta1: ft.betas[0], beta2: ft.betas[1], eps: ft.eps, weightDecay: ft.weight_decay, maxGradNorm: 1 });
      }
    }
    closeAbs(`${name} full trajectory`, 'trajectory loss (abs)', full[1]!, full[0]!, 1e-4);
    // k_proj.bias is skipped: its gradient is zero in exact arithmetic (a bias on the keys shifts
    // every score of a query by the same q.b, which softmax ignores), so what each backend computes
    // is rounding noise, and AdamW normalises noise into lr-sized steps that differ run to run.
    for (const p of cpu.paramNames()) {
      if (p.endsWith('k_proj.bias')) continue;
      close(`${name} param ${p} after 10 steps`, 'trained params', cuda.getParam(p), cpu.getParam(p), 1e-4);
    }
    await cpu.dispose();
    await cuda.dispose();
  });
}

// Greedy decoding through the KV cache (prefill shared, then one-token steps): the logits of every
// step must agree; tokens must agree until the first step whose top two CPU logits are a near tie
// (< 1e-3 apart), where float rounding may legitimately pick the other one.
gpuTest('greedy generation with the KV cache (with and without an adapter) matches the CPU backend', async () => {
  for (const name of CASES) {
    const { cpu, cuda, both } = await pair(name);
    installAdapter(both, 2, 0);
    const r = lcg(3);
    const V = cpu.config.vocabSize;
    const prompts = [
      { tokens: [5] },
      { tokens: Array.from({ length: 37 }, () => Math.floor(r() * V)), slot: 2 },
      { tokens: Array.from({ length: 130 }, () => Math.floor(r() * V)) },
    ];
    const opts = { maxNewTokens: 12, withLogits: true, eosTokenIds: [] as number[] };
    const a = await cpu.generate(prompts, opts);
    const b = await cuda.generate(prompts, opts);
    assert.is(b.length, a.length);
    for (let i = 0; i < a.length; i++) {
      const ca = a[i]!;
      const cb = b[i]!;
      for (let t = 0; t < ca.tokens.length; t++) {
        close(`${name} prompt ${i} step ${t} logits`, 'generation logits', cb.logits![t]!, ca.logits![t]!, 1e-4);
        if (cb.tokens[t] !== ca.tokens[t]) {
          const sorted = [...ca.logits![t]!].sort((x, y) => y - x);
          assert.ok(sorted[0]! - sorted[1]! < 1e-3, `${name} prompt ${i}: token ${t} differs (${cb.tokens[t]} vs ${ca.tokens[t]}) without a near tie`);
          break;
        }
      }
    }
    await cpu.dispose();
    await cuda.dispose();
  }
});

gpuTest('bf16 storage: the CUDA KV cache stays f32 (auto picks it; an explicit bf16 cache is refused clearly)', async () => {
  const { cpu, cuda } = await pair(CASES[0]!, 'bf16');
  assert.is(cpu.defaultKvCache, 'bf16');
  assert.is(cuda.defaultKvCache, 'f32');
  let msg = '';
  try { await cuda.generate([{ tokens: [5] }], { maxNewTokens: 2, kvCache: 'bf16' }); } catch (e) { msg = (e as Error).message; }
  assert.match(msg, /the cuda:\d+ .*backend cannot keep a KV cache in bf16/);
  const [c] = await cuda.generate([{ tokens: [5] }], { maxNewTokens: 2, eosTokenIds: [] });
  assert.is(c!.tokens.length, 2);
  await cpu.dispose();
  await cuda.dispose();
});

gpuTest('bf16 storage: logits and LoRA gradients within bf16 tolerance of the CPU backend', async () => {
  for (const name of CASES) {
    const { cpu, cuda, both } = await pair(name, 'bf16');
    const [, { batch }] = await batches(name, cpu.config.vocabSize);
    const a = await cpu.forwardPacked(batch, { logits: true });
    const b = await cuda.forwardPacked(batch, { logits: true });
    close(`${name} bf16 logits`, 'bf16 logits', b.logits!, a.logits!, 3e-2);
    installAdapter(both, 1, 0);
    await cpu.backwardPacked(withSlot(batch, 1));
    await cuda.backwardPacked(withSlot(batch, 1));
    for (let l = 0; l < cpu.config.numLayers; l++)
      for (const p of PROJ_NAMES)
        close(`${name} bf16 grad ${l}.${p}.B`, 'bf16 lora grads', cuda.getAdapterTensor(1, l, p, 'B', true), cpu.getAdapterTensor(1, l, p, 'B', true), 5e-2);
    await cpu.dispose();
    await cuda.dispose();
  }
});

test('device selection: cuda is either available or refused with a clear error', async () => {
  if (!skipReason) return;  // available: the parity tests above ran
  assert.match(skipReason, /no CUDA device: cudaGetDeviceCount returned|not available in this build|built without CUDA/);
});

test.after(() => {
  if (skipReason) return;
  const lines = [...worst.entries()].map(([k, v]) => `  ${k.padEnd(24)} ${v.toExponential(2)}`);
  console.log(`cuda-model: largest error per quantity (cuda vs cpu):\n${lines.join('\n')}`);
});

test.run();
