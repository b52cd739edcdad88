// Model-level parity with the PyTorch oracle (test/fixtures/generate.py): logits, loss, LoRA and
// full-parameter gradients, and 10-step AdamW trajectories, for llama (GQA, llama3 rope, tied),
// qwen2 (q/k/v bias, untied) and mistral (v5 rope_parameters, explicit head_dim).
//
// Tolerances (f32 engine against an f64 reference on tiny models): logits 2e-5 abs; loss 1e-5;
// gradients 1e-5 abs + 1e-3 rel (summation order differs); trajectories 1e-4 over 10 steps
// (AdamW amplifies float rounding in early steps where v is tiny).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Model } from '../lib/model/model.js';
import { type PackedBatch, type ProjName } from '../lib/model/native-model.js';
import { learningRate } from '../lib/model/schedule.js';
import { assertClose, fixturesDir, readAllTensors, repoRoot } from './helpers/fixtures.js';

interface FixtureJson {
  lora: { r: number; lora_alpha: number; use_rslora: boolean; target_modules: ProjName[] };
  lora_trajectory: { lr: number; betas: [number, number]; eps: number; weight_decay: number; losses: number[] };
  full_trajectory: { lr: number; betas: [number, number]; eps: number; weight_decay: number; warmup_steps: number; steps: number; losses: number[] };
  batch: { seq_lens: number[] };
}

const CASES = ['llama-gqa', 'qwen2-bias', 'mistral-v5'];

async function setup(name: string) {
  const meta = JSON.parse(readFileSync(join(fixturesDir, 'parity', `${name}.json`), 'utf8')) as FixtureJson;
  const t = await readAllTensors(join(fixturesDir, 'parity', `${name}.safetensors`));
  const get = <T extends Float32Array | Int32Array>(k: string) => {
    const v = t.get(k);
    if (!v) throw new Error(`fixture ${name}: missing tensor ${k}`);
    return v as T;
  };
  const model = await Model.load(join(repoRoot, 'test/fixtures/models', name));
  const mask = get<Float32Array>('loss_mask');
  const maskSum = mask.reduce((a, b) => a + b, 0);
  const batch: PackedBatch = {
    tokens: get<Int32Array>('input_ids'),
    seqLens: get<Int32Array>('seq_lens'),
    slots: new Int32Array(meta.batch.seq_lens.length).fill(-1),
    targets: get<Int32Array>('targets'),
    weights: mask.map((m) => m / maskSum),
  };
  const loraBatch: PackedBatch = { ...batch, slots: new Int32Array(meta.batch.seq_lens.length).fill(0) };
  const meanLoss = (loss: Float32Array) => loss.reduce((a, l, i) => a + l * (mask[i] ?? 0), 0) / maskSum;
  const installAdapter = () => {
    model.createAdapter(0, { rank: meta.lora.r, alpha: meta.lora.lora_alpha, rslora: meta.lora.use_rslora, targets: meta.lora.target_modules });
    for (let l = 0; l < model.config.numLayers; l++) {
      for (const p of meta.lora.target_modules) {
        const base = `base_model.model.model.layers.${l}.${p.endsWith('_proj') && ['gate_proj', 'up_proj', 'down_proj'].includes(p) ? 'mlp' : 'self_attn'}.${p}`;
        model.setAdapterTensor(0, l, p, 'A', get<Float32Array>(`${base}.lora_A.weight`));
        model.setAdapterTensor(0, l, p, 'B', get<Float32Array>(`${base}.lora_B.weight`));
      }
    }
  };
  const peftKey = (l: number, p: ProjName, w: 'A' | 'B') =>
    `base_model.model.model.layers.${l}.${['gate_proj', 'up_proj', 'down_proj'].includes(p) ? 'mlp' : 'self_attn'}.${p}.lora_${w}.weight`;
  return { meta, get, model, batch, loraBatch, meanLoss, installAdapter, peftKey };
}

for (const name of CASES) {
  test(`${name}: inv_freq, logits and loss match PyTorch`, async () => {
    const { get, model, batch, meanLoss } = await setup(name);
    const { loss, logits } = await model.forwardPacked(batch, { logits: true });
    assertClose(logits!, get('logits'), 2e-5, 1e-4, `${name} logits`);
    assert.ok(Math.abs(meanLoss(loss!) - (get('loss')[0] ?? NaN)) < 1e-5, `${name} loss ${meanLoss(loss!)} vs ${get('loss')[0]}`);
    await model.dispose();
  });

  test(`${name}: LoRA logits and gradients match PyTorch`, async () => {
    const { get, model, loraBatch, meanLoss, installAdapter, peftKey, meta } = await setup(name);
    installAdapter();
    const fwd = await model.forwardPacked(loraBatch, { logits: true });
    assertClose(fwd.logits!, get('lora_logits'), 2e-5, 1e-4, `${name} lora logits`);
    const { loss } = await model.backwardPacked(loraBatch);
    assert.ok(Math.abs(meanLoss(loss!) - (get('lora_loss')[0] ?? NaN)) < 1e-5, 'lora loss');
    for (let l = 0; l < model.config.numLayers; l++) {
      for (const p of meta.lora.target_modules) {
        for (const w of ['A', 'B'] as const) {
          assertClose(model.getAdapterTensor(0, l, p, w, true), get(`grad.${peftKey(l, p, w)}`), 1e-5, 1e-3, `${name} grad ${peftKey(l, p, w)}`);
        }
      }
    }
    await model.dispose();
  });

  test(`${name}: full-parameter gradients match PyTorch`, async () => {
    const { get, model, batch } = await setup(name);
    await model.backwardPacked(batch, { full: true });
    for (const pname of model.paramNames()) {
      assertClose(model.getParam(pname, true), get(`grad.${pname}`), 1e-5, 1e-3, `${name} grad ${pname}`);
    }
    await model.dispose();
  });

  test(`${name}: 10-step AdamW trajectories (LoRA and full) match PyTorch`, async () => {
    const { meta, model, batch, loraBatch, meanLoss, installAdapter } = await setup(name);
    installAdapter();
    const lt = meta.lora_trajectory;
    const loraLosses: number[] = [];
    for (let s = 0; s < 10; s++) {
      const { loss } = await model.backwardPacked(loraBatch);
      loraLosses.push(meanLoss(loss!));
      await model.optimizerStep({ slots: [0], lr: lt.lr, beta1: lt.betas[0], beta2: lt.betas[1], eps: lt.eps, weightDecay: lt.weight_decay, maxGradNorm: 1 });
    }
    assertClose(loraLosses, lt.losses, 1e-4, 1e-4, `${name} LoRA trajectory`);
    model.dropAdapter(0);
    const ft = meta.full_trajectory;
    const fullLosses: number[] = [];
    for (let s = 1; s <= ft.steps; s++) {
      const { loss } = await model.backwardPacked(batch, { full: true });
      fullLosses.push(meanLoss(loss!));
      const lr = learningRate({ kind: 'cosine', lr: ft.lr, total: ft.steps, warmup: ft.warmup_steps }, s);
      await model.optimizerStep({ full: true, lr, beta1: ft.betas[0], beta2: ft.betas[1], eps: ft.eps, weightDecay: ft.weight_decay, maxGradNorm: 1 });
    }
    assertClose(fullLosses, ft.losses, 1e-4, 1e-4, `${name} full trajectory`);
    await model.dispose();
  });
}

test('schedule: warmup then cosine reproduces the fixture learning rates', async () => {
  const t = await readAllTensors(join(fixturesDir, 'parity', 'llama-gqa.safetensors'));
  const lrs = t.get('full_lrs')!;
  const got = Array.from({ length: 10 }, (_, i) => learningRate({ kind: 'cosine', lr: 1e-3, total: 10, warmup: 3 }, i + 1));
  assertClose(got, lrs, 1e-9, 1e-6, 'lr schedule');
});

test.run();
