// Engine benchmarks on random-initialised models of real configurations: LoRA SFT steps and
// forward scoring, timed as medians over repeated calls after warm-up.
import { native, type NativeInfo } from '../native.js';
import { DEFAULT_STEPS_PER_CALL } from '../model/generate.js';
import type { ModelConfig } from '../model/hf-config.js';
import { Model, type Sequence } from '../model/model.js';
import { PROJ_NAMES, type KvCacheDtype, type OpTiming } from '../model/native-model.js';
import { presetConfig } from '../model/presets.js';
import { withEnv } from './env.js';
import { median } from './median.js';
import { peakReference, type PeakReference } from './peak-reference.js';
import { mergeTimings, summariseProfile, type StepProfile } from './profile.js';

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
  /**
   * Training: the loss covers the last lossOn of each sequence (a completion after a masked
   * prompt, as in SEAL's RL SFT and ARC test-time training). Default 1: every token.
   */
  lossOn?: number;
  device?: 'cpu' | 'cuda';
  /** Time every backend call of the timed steps (BenchResult.profile). */
  profile?: boolean;
  /**
   * A/B in one process: every timed repeat runs one step as usual and one with these environment
   * variables set (the kernels' switches, e.g. SEALKIT_LOCAL_PACK=0, are read per call), in
   * alternating order; BenchResult.ab compares them. Not with profile.
   */
  abEnv?: Record<string, string>;
  /**
   * LoRA adapters the batch mixes: sequence i runs under adapter i mod `adapters` (SEAL's inner loop
   * trains one adapter per sequence, and its evaluation scores and decodes them so). Training's
   * default 1; scoring's 0 (the base model).
   */
  adapters?: number;
  /**
   * Training: steps per engine call (Model.trainSteps, as SEAL's inner loop runs them); each timed
   * repeat is one call and its time over this many steps counts as the step's. Default 1 (trainStep).
   */
  stepsPerCall?: number;
  onProgress?: (done: number, total: number) => void;
}

/** The --ab-env comparison: the main figures are the steps without the variables, these with them. */
export interface AbResult {
  env: Record<string, string>;
  tokens_per_s: number;
  step_ms_median: number;
  step_ms_all: number[];
  /** Median over repeats of (step without) / (step with): above 1, the steps with env are faster. */
  speedup_median: number;
}

/**
 * Repeat i of an A/B (BenchOptions.abEnv): `run` as usual and, with abEnv, once more under it, the
 * order alternating with i so a drift in the machine's speed meets both variants alike.
 */
async function runPair<T>(i: number, abEnv: Record<string, string> | undefined, run: () => Promise<T>): Promise<{ a: T; b?: T }> {
  if (!abEnv) return { a: await run() };
  if (i % 2 === 0) {
    const a = await run();
    return { a, b: await withEnv(abEnv, run) };
  }
  const b = await withEnv(abEnv, run);
  return { a: await run(), b };
}

/** The A/B summary from both variants' timed step times (ms, pair by pair) and tokens per step time. */
function abResult(env: Record<string, string>, ms: number[], msB: number[], tokens: number, stepMs: (ms: number) => number): AbResult {
  return {
    env, tokens_per_s: tokens / (median(msB) / 1000), step_ms_median: stepMs(median(msB)), step_ms_all: msB,
    speedup_median: median(ms.map((t, i) => t / msB[i]!)),
  };
}

export interface BenchResult {
  device: 'cpu' | 'cuda';
  work: 'train' | 'forward' | 'decode';
  preset: string;
  batch: number;
  seq: number;
  /** Training: the fraction of each sequence (its tail) that carries the loss. */
  loss_on?: number;
  /** Adapters the batch mixes (sequence i under adapter i mod adapters; 0: the base model). */
  adapters: number;
  /** The adapters' LoRA rank and alpha (on every projection); absent where there is no adapter. */
  rank?: number;
  alpha?: number;
  /** Training: steps per engine call (trainSteps; 1: one trainStep call per step). */
  steps_per_call?: number;
  threads: number;
  isa: string;
  storage: 'f32' | 'bf16';
  tokens_per_s: number;
  step_ms_median: number;
  step_ms_all: number[];
  /** Estimated model FLOPs per second (see flopsPerToken). */
  gflops: number;
  /** gflops over peak.gflops; null where there is no peak (peak.none says why). */
  mfu: number | null;
  /** The peak mfu is against (peak-reference.ts): on the CPU measured right after the timed steps. */
  peak: PeakReference | { none: string };
  /** Per-op times of the timed steps, when asked for. */
  profile?: StepProfile;
  ab?: AbResult;
  /**
   * CPU: the share of the timed steps (decode: of the timed runs' decoding calls) whose kernels ran
   * inline on one thread (Model.jobThreading: the engine measured that faster for jobs this small).
   */
  inline_share?: number;
}

/** The mfu and peak fields of a result at `gflops`. */
function mfuAgainst(gflops: number, peak: PeakReference | { none: string }): Pick<BenchResult, 'mfu' | 'peak'> {
  return { mfu: 'gflops' in peak ? gflops / peak.gflops : null, peak };
}

/** The bench's LoRA adapters unless told otherwise: the r = 16, alpha = 32 on every projection. */
export const DEFAULT_RANK = 16;
export const DEFAULT_ALPHA = 32;

/** Linear-layer parameters touched per token (every projection plus the LM head). */
export function linearParams(c: ModelConfig): number {
  const dq = c.numHeads * c.headDim;
  const dkv = c.numKvHeads * c.headDim;
  const perLayer = c.hiddenSize * (dq + 2 * dkv) + dq * c.hiddenSize + 3 * c.hiddenSize * c.intermediateSize;
  return c.numLayers * perLayer + c.vocabSize * c.hiddenSize;
}

/**
 * FLOPs per token. Forward: 2 per linear parameter plus causal attention (QK^T and PV over on
 * average seq/2 keys: 2·2·(seq/2)·dq per layer), plus the adapters' forward products (2·r·(in+out)
 * per projection) where the tokens run under a rank-r adapter (rank 0: the base model). LoRA
 * training adds the input-gradient pass (2 per parameter; frozen weights get no weight gradient),
 * attention backward (2.5x its forward) and the adapters' own small GEMMs (forward, input and weight
 * gradients: 6·r·(in+out) each). In training the LM head runs only on the lossOn fraction of tokens
 * that carry a loss.
 */
export function flopsPerToken(c: ModelConfig, seq: number, work: 'train' | 'forward', rank: number, lossOn = 1): number {
  const P = linearParams(c);
  const attn = c.numLayers * 2 * seq * c.numHeads * c.headDim;
  if (work === 'forward') return 2 * P + attn + loraFlopsPerToken(c, rank) / 3;
  const headUnused = (1 - lossOn) * c.vocabSize * c.hiddenSize;
  return 4 * (P - headUnused) + attn * 3.5 + loraFlopsPerToken(c, rank);
}

/**
 * The part of a LoRA training step's FLOPs per token (flopsPerToken) in the adapters' own products
 * on all seven projections: forward, input and weight gradients, 6·r·(in+out) each. The engine runs
 * them in f32 whatever the base weights' dtype.
 */
export function loraFlopsPerToken(c: ModelConfig, rank: number): number {
  const dq = c.numHeads * c.headDim;
  const dkv = c.numKvHeads * c.headDim;
  const H = c.hiddenSize;
  const I = c.intermediateSize;
  const loraDims = (H + dq) + 2 * (H + dkv) + (dq + H) + 2 * (H + I) + (I + H);
  return c.numLayers * 6 * rank * loraDims;
}

/** Batched decoding's GEMMs: bf16 weights against 2-16 rows, where the CPU may run them its own way. */
const batchedBf16Rows = (storage: 'f32' | 'bf16', batch: number) => storage === 'bf16' && batch >= 2 && batch <= 16;

/**
 * Whether a CPU decode of `batch` sequences at this storage multiplies its weights on AMX tiles
 * (NativeInfo.decodeRowsOnAmx: bf16 weights, 2-16 rows per GEMM); else vdpbf16ps or f32 FMAs.
 */
export function rowsOnAmx(info: NativeInfo, storage: 'f32' | 'bf16', batch: number): boolean {
  return info.decodeRowsOnAmx && batchedBf16Rows(storage, batch);
}

/**
 * Whether a CPU decode of `batch` sequences at this storage reads its weights' packed strips
 * (NativeInfo.decodeRowsPacked: bf16 weights, 2-16 rows per GEMM, not on AMX tiles); else their rows.
 */
export function rowsOnPackedStrips(info: NativeInfo, storage: 'f32' | 'bf16', batch: number): boolean {
  return info.decodeRowsPacked && batchedBf16Rows(storage, batch) && !rowsOnAmx(info, storage, batch);
}

/** How decoding's weights were prefetched (NativeInfo.decodePrefetch), in words. */
export function describePrefetch(p: 'nta' | 'l2'): string {
  return p === 'nta' ? 'with the non-temporal hint' : 'into L2';
}

/** Jobs and inline jobs a model has run so far, of the given kinds (Model.jobThreading). */
function jobCounts(model: Model, kinds: readonly string[]): { jobs: number; inline: number } {
  return model.jobThreading().filter((r) => kinds.includes(r.kind))
    .reduce((a, r) => ({ jobs: a.jobs + r.jobs, inline: a.inline + r.inlineJobs }), { jobs: 0, inline: 0 });
}

/** The share of the jobs between two counts that ran inline (undefined: none ran). */
function inlineShare(before: { jobs: number; inline: number }, after: { jobs: number; inline: number }): { inline_share?: number } {
  return after.jobs > before.jobs ? { inline_share: (after.inline - before.inline) / (after.jobs - before.jobs) } : {};
}

/** Tokens of a `seq`-token training sequence left out of the loss when it covers the last lossOn. */
const maskedPrefix = (seq: number, lossOn: number) => Math.round(seq * (1 - lossOn));

/** Why `lossOn` cannot be benchmarked for this work and sequence length (undefined: it can). */
export function lossOnProblem(work: 'train' | 'forward', seq: number, lossOn: number): string | undefined {
  if (!(lossOn > 0 && lossOn <= 1)) return 'must be in (0, 1]';
  if (lossOn < 1 && work !== 'train') return 'is for training';
  if (maskedPrefix(seq, lossOn) >= seq - 1) return `leaves no token with a loss in a ${seq}-token sequence`;
  return undefined;
}

/**
 * `count` adapters in slots 0..count-1 (r = rank, alpha, on every projection), and the slot of
 * sequence i: i mod count (-1, the base model, for none). Their B start at zero, as PEFT's do: the
 * side paths' products run all the same.
 */
function createBenchAdapters(model: Model, count: number, rank: number, alpha: number): (i: number) => number {
  if (!Number.isInteger(count) || count < 0) throw new Error(`bench: adapters must be an integer >= 0, got ${count}`);
  for (let slot = 0; slot < count; slot++) model.createAdapter(slot, { rank, alpha, targets: PROJ_NAMES, seed: slot + 1 });
  return (i) => (count > 0 ? i % count : -1);
}

/** Random tokens; with lossOn < 1, a trainMask that leaves the first (1 - lossOn) of each sequence out. */
function randomSequences(batch: number, seq: number, vocab: number, slot: (i: number) => number, seed: number, lossOn = 1): Sequence[] {
  let x = seed >>> 0 || 1;
  const next = () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
  const prompt = maskedPrefix(seq, lossOn);
  return Array.from({ length: batch }, (_, i) => ({
    tokens: Array.from({ length: seq }, () => next() % vocab), slot: slot(i),
    ...(lossOn < 1 ? { trainMask: Array.from({ length: seq }, (_, t) => (t >= prompt ? 1 : 0)) } : {}),
  }));
}

export interface DecodeBenchOptions {
  preset: string;
  /** Sequences decoded together. */
  batch: number;
  prompt: number;
  newTokens: number;
  threads?: number;
  warmup?: number;
  repeats?: number;
  storage?: 'f32' | 'bf16';
  device?: 'cpu' | 'cuda';
  /** KV cache element type (default 'auto': the model's defaultKvCache). */
  kvCache?: 'auto' | KvCacheDtype;
  /** 0 (default) decodes greedily; > 0 samples at this temperature, with topP (default 1). */
  temperature?: number;
  /** Decoding steps per engine call (generate's stepsPerCall; default 16). */
  stepsPerCall?: number;
  topP?: number;
  /** Time every backend call of the timed runs' decoding steps (BenchResult.profile; prefill excluded). */
  profile?: boolean;
  /** Adapters the prompts mix (prompt i under adapter i mod adapters); default 0, the base model. */
  adapters?: number;
  /** The adapters' rank and alpha (default DEFAULT_RANK and DEFAULT_ALPHA). */
  rank?: number;
  alpha?: number;
  /**
   * A/B in one process, as BenchOptions.abEnv: every timed repeat runs one generation as usual and
   * one with these environment variables set, in alternating order. Not with profile.
   */
  abEnv?: Record<string, string>;
  onProgress?: (done: number, total: number) => void;
}

/**
 * Decode throughput: `batch` prompts of `prompt` random tokens, greedy or sampled, `newTokens` each, through
 * the KV cache. tokens_per_s counts the tokens after the first (the first one's time is prefill),
 * over the time from the first token to the last.
 */
export async function runDecodeBench(o: DecodeBenchOptions): Promise<BenchResult & { prefill_ms_median: number; weight_bytes: number; kv_cache: KvCacheDtype; sampling: string; steps_per_call: number; prefetch?: 'nta' | 'l2'; rows_on_amx?: boolean; rows_on_packed_strips?: boolean; weight_bytes_read: number; weights_coded: boolean }> {
  const addon = native();
  const threads = addon.setThreads(o.threads ?? 0);
  const config = presetConfig(o.preset);
  const storage = o.storage ?? 'bf16';
  const device = o.device ?? 'cpu';
  if (o.abEnv && o.profile) throw new Error('runDecodeBench: abEnv and profile cannot be combined (the profile would mix both variants)');
  const model = await Model.create(config, { storage, seed: 1234, device, profile: o.profile });
  try {
    const adapters = o.adapters ?? 0;
    const rank = o.rank ?? DEFAULT_RANK, alpha = o.alpha ?? DEFAULT_ALPHA;
    const slotOf = createBenchAdapters(model, adapters, rank, alpha);
    const prompts = randomSequences(o.batch, o.prompt, config.vocabSize, slotOf, 42).map((s) => ({ tokens: s.tokens, slot: s.slot }));
    const kvCache = !o.kvCache || o.kvCache === 'auto' ? model.defaultKvCache : o.kvCache;
    const warmup = o.warmup ?? 1;
    const repeats = o.repeats ?? 3;
    const temperature = o.temperature ?? 0, topP = o.topP ?? 1;
    const sampling = temperature > 0 ? { temperature, topP, seed: 7 } : {};
    const stepsPerCall = o.stepsPerCall ?? DEFAULT_STEPS_PER_CALL;
    const decodeMs: number[] = [];
    const prefillMs: number[] = [];
    const decodeMsB: number[] = [];
    const decodeCalls: OpTiming[] = [];
    // One generation: its prefill and decoding times (from the first token to the last).
    const generation = async (keepProfile: boolean): Promise<{ prefill: number; decode: number }> => {
      const t0 = process.hrtime.bigint();
      let tFirst = 0n;
      for await (const e of model.generateStream(prompts, { maxNewTokens: o.newTokens, eosTokenIds: [], kvCache, stepsPerCall, ...sampling })) {
        if (e.type === 'token' && tFirst === 0n) {
          tFirst = process.hrtime.bigint();
          // The stream is lazy: nothing after the prefill has run yet. Drop the prefill's calls.
          if (o.profile) await model.takeProfile();
        }
      }
      const tEnd = process.hrtime.bigint();
      if (o.profile) {
        const calls = await model.takeProfile();
        if (keepProfile) decodeCalls.push(...calls);
      }
      return { prefill: Number(tFirst - t0) / 1e6, decode: Number(tEnd - tFirst) / 1e6 };
    };
    const abEnv = o.abEnv;
    let before = jobCounts(model, ['decode']);
    for (let i = 0; i < warmup + repeats; i++) {
      if (i === warmup) before = jobCounts(model, ['decode']);
      const timed = i >= warmup;
      const { a, b } = await runPair(i, abEnv, () => generation(timed));
      if (timed) {
        prefillMs.push(a.prefill);
        decodeMs.push(a.decode);
        if (b) decodeMsB.push(b.decode);
      }
      o.onProgress?.(i + 1, warmup + repeats);
    }
    const med = median(decodeMs);
    const tokens = o.batch * (o.newTokens - 1);
    const tps = tokens / (med / 1000);
    const c = config;
    // Bytes streamed per decode step: every projection and the LM head (tied or not, it is read once).
    const weightBytes = linearParams(c) * (storage === 'bf16' ? 2 : 4);
    // What one sequence's step reads of those: less where the model coded them (Model.decodeReadBytes).
    const weightBytesRead = model.decodeReadBytes(o.batch);
    const gflops = (tps * flopsPerToken(config, o.prompt + o.newTokens / 2, 'forward', adapters > 0 ? rank : 0)) / 1e9;
    return {
      device, work: 'decode', preset: o.preset, batch: o.batch, seq: o.prompt + o.newTokens, adapters,
      ...(adapters > 0 ? { rank, alpha } : {}), threads, isa: addon.info().isa, storage,
      tokens_per_s: tps, step_ms_median: med / Math.max(1, o.newTokens - 1), step_ms_all: decodeMs,
      gflops, ...mfuAgainst(gflops, peakReference(addon, device, storage)),
      prefill_ms_median: median(prefillMs), weight_bytes: weightBytes, kv_cache: kvCache,
      weight_bytes_read: weightBytesRead, weights_coded: weightBytesRead < weightBytes,
      ...(device === 'cpu' ? { prefetch: addon.info().decodePrefetch, rows_on_amx: rowsOnAmx(addon.info(), storage, o.batch),
        rows_on_packed_strips: rowsOnPackedStrips(addon.info(), storage, o.batch) } : {}),
      sampling: temperature > 0 ? `temperature ${temperature}, top-p ${topP}` : 'greedy', steps_per_call: stepsPerCall,
      ...inlineShare(before, jobCounts(model, ['decode'])),
      ...(abEnv ? { ab: abResult(abEnv, decodeMs, decodeMsB, tokens, (ms) => ms / Math.max(1, o.newTokens - 1)) } : {}),
      // The decoding steps after the prefill: newTokens - 1 per run.
      ...(o.profile ? { profile: summariseProfile(mergeTimings(decodeCalls), repeats * (o.newTokens - 1), decodeMs.reduce((a, b) => a + b, 0), 'decoding step') } : {}),
    };
  } finally {
    await model.dispose();
  }
}

export async function runBench(work: 'train' | 'forward', o: BenchOptions): Promise<BenchResult> {
  if (o.abEnv && o.profile) throw new Error('runBench: abEnv and profile cannot be combined (the profile would mix both variants)');
  const addon = native();
  const threads = addon.setThreads(o.threads ?? 0);
  const config = presetConfig(o.preset);
  const storage = o.storage ?? 'bf16';
  const rank = o.rank ?? DEFAULT_RANK, alpha = o.alpha ?? DEFAULT_ALPHA;
  const device = o.device ?? 'cpu';
  const lossOn = o.lossOn ?? 1;
  const problem = lossOnProblem(work, o.seq, lossOn);
  if (problem) throw new Error(`runBench: lossOn ${lossOn} ${problem}`);
  const model = await Model.create(config, { storage, seed: 1234, device, profile: o.profile });
  try {
    const adapters = o.adapters ?? (work === 'train' ? 1 : 0);
    if (work === 'train' && adapters < 1) throw new Error('runBench: training needs at least one adapter');
    const seqs = randomSequences(o.batch, o.seq, config.vocabSize, createBenchAdapters(model, adapters, rank, alpha), 42, lossOn);
    const warmup = o.warmup ?? 2;
    const repeats = o.repeats ?? 5;
    const perCall = o.stepsPerCall ?? 1;
    if (!(Number.isInteger(perCall) && perCall >= 1)) throw new Error(`runBench: stepsPerCall must be a positive integer, got ${perCall}`);
    if (work !== 'train' && perCall !== 1) throw new Error('runBench: stepsPerCall is for training');
    const trainOptions = { mode: 'lora' as const, lr: 1e-4 };
    const step = async (): Promise<number> => {
      const t0 = process.hrtime.bigint();
      if (work === 'train' && perCall > 1) await model.trainSteps(Array.from({ length: perCall }, () => ({ sequences: seqs, options: trainOptions })));
      else if (work === 'train') await model.trainStep(seqs, trainOptions);
      else await model.score(seqs);
      return Number(process.hrtime.bigint() - t0) / 1e6 / perCall;
    };
    const abEnv = o.abEnv;
    const times: number[] = [], timesB: number[] = [];
    const kinds = [work === 'train' ? 'trainStep' : 'forward'];
    let before = jobCounts(model, kinds);
    for (let i = 0; i < warmup + repeats; i++) {
      if (o.profile && i === warmup) await model.takeProfile();  // drop the warm-up steps' calls
      if (i === warmup) before = jobCounts(model, kinds);
      const { a, b } = await runPair(i, abEnv, step);
      if (i >= warmup) {
        times.push(a);
        if (b !== undefined) timesB.push(b);
      }
      o.onProgress?.(i + 1, warmup + repeats);
    }
    const tokens = o.batch * o.seq;
    const med = median(times);
    const tps = tokens / (med / 1000);
    const after = jobCounts(model, kinds);
    const gflops = (tps * flopsPerToken(config, o.seq, work, adapters > 0 ? rank : 0, lossOn)) / 1e9;
    return {
      device, work, preset: o.preset, batch: o.batch, seq: o.seq, ...(work === 'train' ? { loss_on: lossOn, steps_per_call: perCall } : {}), adapters,
      ...(adapters > 0 ? { rank, alpha } : {}),
      threads, isa: addon.info().isa, storage,
      tokens_per_s: tps, step_ms_median: med, step_ms_all: times,
      gflops, ...mfuAgainst(gflops, peakReference(addon, device, storage)),
      ...inlineShare(before, after),
      ...(o.profile ? { profile: summariseProfile(await model.takeProfile(), repeats * perCall, times.reduce((a, b) => a + b, 0) * perCall, 'step') } : {}),
      ...(abEnv ? { ab: abResult(abEnv, times, timesB, tokens, (ms) => ms) } : {}),
    };
  } finally {
    await model.dispose();
  }
}
