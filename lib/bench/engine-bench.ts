// Engine benchmarks on random-initialised models of real configurations: LoRA SFT steps and
// forward scoring, timed as medians over repeated calls after warm-up.
import { native } from '../native.js';
import type { ModelConfig } from '../model/hf-config.js';
import { Model, type Sequence } from '../model/model.js';
import { PROJ_NAMES } from '../model/native-model.js';
import { presetConfig } from '../model/presets.js';

export interface BenchOptions {
  preset: string;
  batch: number;
  seq: number;
  threads?: number;
  warmup?: number;
  repeats?: number;
  storage?: 'f32' | 'bf16';
  rank?: number;
  alpha?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface BenchResult {
  work: 'train' | 'forward';
  preset: string;
  batch: number;
  seq: number;
  threads: number;
  isa: string;
  storage: 'f32' | 'bf16';
  tokens_per_s: number;
  step_ms_median: number;
  step_ms_all: number[];
  /** Estimated model FLOPs per second (see flopsPerToken). */
  gflops: number;
}

/** Linear-layer parameters touched per token (every projection plus the LM head). */
function linearParams(c: ModelConfig): number {
  const dq = c.numHeads * c.headDim;
  const dkv = c.numKvHeads * c.headDim;
  const perLayer = c.hiddenSize * (dq + 2 * dkv) + dq * c.hiddenSize + 3 * c.hiddenSize * c.intermediateSize;
  return c.numLayers * perLayer + c.vocabSize * c.hiddenSize;
}

/**
 * FLOPs per token. Forward: 2 per linear parameter plus causal attention (QK^T and PV over on
 * average seq/2 keys: 2·2·(seq/2)·dq per layer). LoRA training adds the input-gradient pass
 * (2 per parameter; frozen weights get no weight gradient), attention backward (2.5x its forward)
 * and the adapters' own small GEMMs (forward, input and weight gradients: 6·r·(in+out) each).
 */
export function flopsPerToken(c: ModelConfig, seq: number, work: 'train' | 'forward', rank: number): number {
  const P = linearParams(c);
  const attn = c.numLayers * 2 * seq * c.numHeads * c.headDim;
  if (work === 'forward') return 2 * P + attn;
  const dq = c.numHeads * c.headDim;
  const dkv = c.numKvHeads * c.headDim;
  const H = c.hiddenSize;
  const I = c.intermediateSize;
  const loraDims = (H + dq) + 2 * (H + dkv) + (dq + H) + 2 * (H + I) + (I + H);
  return 4 * P + attn * 3.5 + c.numLayers * 6 * rank * loraDims;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] ?? NaN) : ((s[m - 1] ?? NaN) + (s[m] ?? NaN)) / 2;
}

function randomSequences(batch: number, seq: number, vocab: number, slot: number, seed: number): Sequence[] {
  let x = seed >>> 0 || 1;
  const next = () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
  return Array.from({ length: batch }, () => ({ tokens: Array.from({ length: seq }, () => next() % vocab), slot }));
}

export async function runBench(work: 'train' | 'forward', o: BenchOptions): Promise<BenchResult> {
  const addon = native();
  const threads = addon.setThreads(o.threads ?? 0);
  const config = presetConfig(o.preset);
  const storage = o.storage ?? 'bf16';
  const rank = o.rank ?? 16;
  const model = await Model.create(config, { storage, seed: 1234 });
  try {
    const slot = work === 'train' ? 0 : -1;
    if (work === 'train') model.createAdapter(0, { rank, alpha: o.alpha ?? 32, targets: PROJ_NAMES, seed: 1 });
    const seqs = randomSequences(o.batch, o.seq, config.vocabSize, slot, 42);
    const warmup = o.warmup ?? 2;
    const repeats = o.repeats ?? 5;
    const times: number[] = [];
    for (let i = 0; i < warmup + repeats; i++) {
      const t0 = process.hrtime.bigint();
      if (work === 'train') await model.trainStep(seqs, { mode: 'lora', lr: 1e-4 });
      else await model.score(seqs);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (i >= warmup) times.push(ms);
      o.onProgress?.(i + 1, warmup + repeats);
    }
    const med = median(times);
    const tokens = o.batch * o.seq;
    const tps = tokens / (med / 1000);
    return {
      work, preset: o.preset, batch: o.batch, seq: o.seq, threads, isa: addon.info().isa, storage,
      tokens_per_s: tps, step_ms_median: med, step_ms_all: times,
      gflops: (tps * flopsPerToken(config, o.seq, work, rank)) / 1e9,
    };
  } finally {
    await model.dispose();
  }
}
