// The typed face of the addon's `Model` class (native/addon/model_binding.cc). lib/model/model.ts
// is the public API; this file only describes the boundary.
import type { NativeAddon } from '../native.js';

export type ProjName = 'q_proj' | 'k_proj' | 'v_proj' | 'o_proj' | 'gate_proj' | 'up_proj' | 'down_proj';
export const PROJ_NAMES: readonly ProjName[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export interface NativeModelConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  tieWordEmbeddings: boolean;
  qkvBias: boolean;
  invFreq: Float32Array;
}

/** Sequences packed back to back; every sequence names an adapter slot (-1 = base model). */
export interface PackedBatch {
  tokens: Int32Array;
  seqLens: Int32Array;
  slots: Int32Array;
  /** Next-token target per position (-1 = none). */
  targets?: Int32Array;
  /** Loss weight per position (backward only). */
  weights?: Float32Array;
}

export interface NativeAdapterSpec {
  rank: number;
  alpha: number;
  rslora?: boolean;
  dropout?: number;
  targets: ProjName[];
  seed?: number | bigint;
}

export interface NativeAdapterInfo {
  rank: number;
  alpha: number;
  scale: number;
  rslora: boolean;
  dropout: number;
  targets: ProjName[];
  step: number;
}

export interface NativeStepOptions {
  full?: boolean;
  slots?: number[];
  lr: number;
  /** Per-slot learning rates (one per entry of slots); overrides lr for adapters. */
  lrs?: number[];
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  maxGradNorm?: number;
}

/**
 * How one kind and size of job has run its kernels (CPU): on the thread pool, or inline on the
 * job's thread, whichever recent jobs of its kind measured faster (see native/engine/job_threading.h).
 */
export interface JobThreadingRow {
  kind: 'forward' | 'backward' | 'trainStep' | 'decode' | 'prefill';
  /** Jobs of more than tokensUpTo / 2 and at most tokensUpTo tokens. */
  tokensUpTo: number;
  jobs: number;
  inlineJobs: number;
  /** Lower quartiles of the recent jobs each way (0: none yet). */
  pooledMicrosPerToken: number;
  inlineMicrosPerToken: number;
  /** The way jobs of this kind and size run now (apart from an occasional try of the other). */
  inlineNow: boolean;
}

/** One kind of backend call in a profile: an op, and for GEMMs its orientation, M x N x K and weight type. */
export interface OpTiming {
  op: string;
  calls: number;
  seconds: number;
  /** 2 per multiply-add, GEMMs only (0 for other ops). */
  flops: number;
}

export interface NativeModel {
  paramNames(): string[];
  paramShape(name: string): { shape: number[]; dtype: 'f32' | 'bf16' };
  loadTensors(list: { name: string; file: string; begin: number; end: number; dtype: 'F32' | 'BF16' | 'F16' }[]): Promise<void>;
  initRandom(seed: number | bigint, std: number): Promise<void>;
  getParam(name: string, grad?: boolean): Float32Array;
  setParam(name: string, data: Float32Array): void;
  createAdapter(slot: number, spec: NativeAdapterSpec): void;
  dropAdapter(slot: number): void;
  adapterInfo(slot: number): NativeAdapterInfo | null;
  mergeAdapter(slot: number): void;
  getAdapterTensor(slot: number, layer: number, proj: ProjName, which: 'A' | 'B', grad?: boolean): Float32Array;
  setAdapterTensor(slot: number, layer: number, proj: ProjName, which: 'A' | 'B', data: Float32Array): void;
  forward(batch: PackedBatch, options?: { logits?: boolean }): Promise<{ loss?: Float32Array; logits?: Float32Array }>;
  backward(batch: PackedBatch, options?: { full?: boolean; seed?: number | bigint }): Promise<{ loss?: Float32Array }>;
  step(options: NativeStepOptions): Promise<number[]>;
  /** backward then step as one native job (one thread round trip per training step, not two). */
  trainStep(batch: PackedBatch, options: { full?: boolean; seed?: number | bigint }, step: NativeStepOptions): Promise<{ loss?: Float32Array; norms: number[] }>;
  /** trainStep's steps one after another as one native job (one thread round trip per call). */
  trainSteps(steps: [PackedBatch, { full?: boolean; seed?: number | bigint }, NativeStepOptions][]): Promise<{ loss?: Float32Array; norms: number[] }[]>;
  zeroGrad(): void;
  memoryBytes(): number;
  /** Bytes of projection and LM-head weights a decoding step of `sequences` reads (coded copies where made). */
  decodeReadBytes(sequences: number): number;
  /** The KV cache element type generateBegin picks for kvCache 'auto'. */
  defaultKvCache(): KvCacheDtype;
  /** Backend calls timed since the last take, largest time first (models created with profile: true). */
  takeProfile(): OpTiming[];
  jobThreading(): JobThreadingRow[];
  generateBegin(request: NativeGenerateRequest, options?: { logits?: boolean }): Promise<NativeGenerateStep & { id: number; cacheBytes: number; kvCache: KvCacheDtype }>;
  /**
   * Up to `steps` (default 1) decoding steps in one call: tokens[i] was sampled for seqs[i], counts[j]
   * of them in step j. A sequence stops after a token in `eos` or its maxNew-th token.
   */
  generateStep(id: number, seqs: Int32Array, tokens: Int32Array, options?: { logits?: boolean; steps?: number; eos?: Int32Array }): Promise<NativeGenerateStep>;
  /** Takes back the last counts[i] decoding steps of sequence seqs[i] (see Generation::rewind). */
  generateRewind(id: number, seqs: Int32Array, counts: Int32Array): void;
  generateEnd(id: number): void;
  dispose(): void;
}

export interface NativeGenerateRequest {
  tokens: Int32Array;
  promptLens: Int32Array;
  slots: Int32Array;
  n: number;
  maxNew: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  promptSeeds?: number[];
  maxCacheBytes?: number;
  kvCache?: 'auto' | KvCacheDtype;
}

/** Element type of a generation's KV cache. */
export type KvCacheDtype = 'f32' | 'bf16';

export interface NativeGenerateStep {
  tokens: Int32Array;
  /** The sequence each token was sampled for. */
  seqs: Int32Array;
  /** Tokens sampled by each step, in order. */
  counts: Int32Array;
  logits?: Float32Array;
}

export type NativeModelClass = new (config: NativeModelConfig, options?: { storage?: 'f32' | 'bf16'; device?: 'cpu' | 'cuda'; profile?: boolean; codedWeights?: boolean | 'auto' }) => NativeModel;

export function nativeModelClass(addon: NativeAddon): NativeModelClass {
  return addon.Model as NativeModelClass;
}
