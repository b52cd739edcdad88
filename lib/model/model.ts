// The public model API: load a Hugging Face directory (or build a random model from a config),
// score and train token batches with LoRA adapters in numbered slots or with all parameters, save.
// Every heavy call runs on native threads and resolves a Promise; calls on one model are queued,
// so callers may fire several without awaiting each.
import { copyFile, mkdir, readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { native } from '../native.js';
import { readModelConfig, writeModelConfig, type ModelConfig } from './hf-config.js';
import {
  nativeModelClass, PROJ_NAMES, type JobThreadingRow, type KvCacheDtype, type NativeAdapterInfo, type NativeModel, type NativeStepOptions, type OpTiming, type PackedBatch, type ProjName,
} from './native-model.js';
import { ropeInvFreq } from './rope.js';
import { writeSafetensors, type TensorToWrite } from './safetensors.js';
import { planWeights } from './weights.js';
import { generate, generateStream, type Completion, type GenerateOptions, type GenerationEvent, type Prompt } from './generate.js';

export type Device = 'cpu' | 'cuda';
export type Storage = 'f32' | 'bf16';

export interface LoadOptions {
  /** Backend the model runs on (default cpu). */
  device?: Device;
  /**
   * How base weights are stored: f32 (trainable) or bf16 (half the memory; LoRA only). Default f32.
   * With bf16, the GEMMs multiply in bf16 with f32 sums where the CPU has AVX512-BF16 or AMX, as
   * torch.autocast does, and so does attention where `native().info().attentionBf16` (AMD Zen 4/5;
   * SEALKIT_ATTENTION_BF16=0 keeps it in f32).
   */
  storage?: Storage;
  /**
   * Time every backend call (op, GEMM shape) for takeProfile(). Results do not change; each call
   * waits for its kernel to finish, so on a GPU the model runs slower while profiled.
   */
  profile?: boolean;
  /**
   * Decoding from 12-bit coded copies of bf16 weights (lossless: the same tokens and logits, to the
   * bit; 3/4 of the bytes per step, and 3/4 of the weights' memory per copy; NativeInfo.codedWeights
   * says whether this CPU can): 'auto' (default) codes them on the first decoding step when they are
   * over twice the last-level cache, true whatever their size, false never.
   */
  codedWeights?: boolean | 'auto';
}

export interface CreateOptions extends LoadOptions {
  /** Seed of the random initialisation. */
  seed?: number;
  /** Standard deviation of the random matrices (norm weights start at 1, biases at 0). */
  initStd?: number;
}

export interface LoraOptions {
  rank: number;
  alpha: number;
  /** Projections adapted (default all seven). */
  targets?: readonly ProjName[];
  dropout?: number;
  /** Scale by alpha/sqrt(rank) instead of alpha/rank. */
  rslora?: boolean;
  /** Seed of A's initialisation (B starts at zero, so a new adapter leaves the model unchanged). */
  seed?: number;
}

/** One sequence of a batch. */
export interface Sequence {
  tokens: ArrayLike<number>;
  /** Adapter slot the sequence runs with; -1 or absent = base model only. */
  slot?: number;
  /**
   * Which tokens are training targets (Hugging Face "labels" convention: entry t weighs the loss of
   * predicting tokens[t] from tokens[..t]; entry 0 is ignored). Default: every token after the first.
   */
  trainMask?: ArrayLike<number>;
}

export interface ScoreResult {
  /** Number of predicted positions (targets) scored. */
  tokens: number;
  /** Mean negative log-likelihood in nats over the predicted positions. */
  nll: number;
  /** Per sequence: log p(tokens[t] | tokens[..t]) for t = 1..len-1, and its mean NLL. */
  sequences: { logprobs: Float32Array; nll: number }[];
}

export interface TrainStepOptions {
  /** 'lora': train the adapters the sequences name; 'full': train every base parameter. */
  mode: 'lora' | 'full';
  lr: number;
  /** Per-adapter learning rates (lora mode), overriding lr for the slots they name. */
  slotLr?: ReadonlyMap<number, number>;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Clip each trained group's gradient norm (each adapter on its own). 0 = off. Default 1. */
  maxGradNorm?: number;
  /** Seed for LoRA dropout masks. */
  seed?: number;
}

export interface TrainStepResult {
  /** Mean loss over the batch's training targets, per trained group (slot, or -1 for full mode). */
  loss: Map<number, number>;
  /** Gradient norm before clipping, per trained group. */
  gradNorm: Map<number, number>;
  /** Training targets in the batch. */
  tokens: number;
}

export class Model {
  readonly config: ModelConfig;
  readonly device: Device;
  readonly storage: Storage;
  /** The directory the model was loaded from, if any (tokenizer files are copied from it on save). */
  readonly sourceDir: string | undefined;
  private handle: NativeModel | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(config: ModelConfig, handle: NativeModel, device: Device, storage: Storage, sourceDir?: string) {
    this.config = config;
    this.handle = handle;
    this.device = device;
    this.storage = storage;
    this.sourceDir = sourceDir;
  }

  /** Loads a Hugging Face model directory (config.json + safetensors, sharded or not). */
  static async load(dir: string, options: LoadOptions = {}): Promise<Model> {
    const config = await readModelConfig(dir);
    const plan = await planWeights(dir, config);
    const model = Model.allocate(config, options, resolve(dir));
    const list = [...plan.tensors].map(([name, src]) => ({ name, file: src.file, begin: src.begin, end: src.end, dtype: src.dtype }));
    await model.run((h) => h.loadTensors(list));
    return model;
  }

  /** A randomly initialised model of a configuration (pretraining, benchmarks). */
  static async create(config: ModelConfig, options: CreateOptions = {}): Promise<Model> {
    const model = Model.allocate(config, options);
    await model.run((h) => h.initRandom(options.seed ?? 0, options.initStd ?? 0.02));
    return model;
  }

  private static allocate(config: ModelConfig, options: LoadOptions, dir?: string): Model {
    const Native = nativeModelClass(native());
    const device = options.device ?? 'cpu';
    const storage = options.storage ?? 'f32';
    const handle = new Native(
      {
        vocabSize: config.vocabSize, hiddenSize: config.hiddenSize, intermediateSize: config.intermediateSize,
        numLayers: config.numLayers, numHeads: config.numHeads, numKvHeads: config.numKvHeads, headDim: config.headDim,
        rmsNormEps: config.rmsNormEps, tieWordEmbeddings: config.tieWordEmbeddings, qkvBias: config.qkvBias,
        invFreq: ropeInvFreq(config),
      },
      { storage, device, profile: options.profile ?? false, codedWeights: options.codedWeights ?? 'auto' },
    );
    return new Model(config, handle, device, storage, dir);
  }

  private live(): NativeModel {
    if (!this.handle) throw new Error('model was disposed');
    return this.handle;
  }

  /** Runs fn after every earlier call on this model has settled (engine-internal: lib/model only). */
  run<T>(fn: (h: NativeModel) => Promise<T> | T): Promise<T> {
    const next = this.queue.then(() => fn(this.live()));
    this.queue = next.catch(() => undefined);
    return next;
  }

  // ---- parameters ----
  paramNames(): string[] { return this.live().paramNames(); }
  /** A copy of a base parameter (f32), or of its accumulated gradient. */
  getParam(name: string, grad = false): Float32Array { return this.live().getParam(name, grad); }
  setParam(name: string, data: Float32Array): void { this.live().setParam(name, data); }
  memoryBytes(): number { return this.live().memoryBytes(); }
  /**
   * Bytes of projection and LM-head weights a decoding step of `sequences` sequences (default 1)
   * reads: after the model's first such step, where its bf16 weights are over twice the CPU's
   * last-level cache, their 12-bit coded copies (lossless, the same bits; NativeInfo.codedWeights:
   * the rows for one sequence, the packed strips for 2-16), else the weights.
   */
  decodeReadBytes(sequences = 1): number { return this.live().decodeReadBytes(sequences); }
  /**
   * The backend calls timed since the last take (or since the model was made), largest time first,
   * then starts a new tally; it waits for the calls queued before it. Only for models created or
   * loaded with { profile: true }.
   */
  takeProfile(): Promise<OpTiming[]> { return this.run((h) => h.takeProfile()); }
  /**
   * How forward, backward and training-step jobs have run their kernels, per kind and size of job:
   * on the thread pool or inline on one thread, whichever recent jobs measured faster (small jobs on
   * a VM whose vCPUs share no cache run faster on one thread). SEALKIT_JOB_THREADING=pooled or
   * =inline fixes the choice. Empty on CUDA.
   */
  jobThreading(): JobThreadingRow[] { return this.live().jobThreading(); }
  /**
   * The KV cache element type generation uses unless told otherwise (GenerateOptions.kvCache):
   * bf16 for bf16 weights on a backend that supports it (the CPU), f32 otherwise.
   */
  get defaultKvCache(): KvCacheDtype { return this.live().defaultKvCache(); }

  // ---- adapters ----
  createAdapter(slot: number, options: LoraOptions): void {
    const targets = [...(options.targets ?? PROJ_NAMES)];
    this.live().createAdapter(slot, {
      rank: options.rank, alpha: options.alpha, rslora: options.rslora ?? false, dropout: options.dropout ?? 0,
      targets, seed: options.seed ?? slot,
    });
  }
  dropAdapter(slot: number): void { this.live().dropAdapter(slot); }
  /**
   * Folds the adapter in `slot` into the base weights (W += s·B·A) and drops it, so the base model
   * now behaves like base + adapter. Needs f32 storage.
   */
  async mergeAdapter(slot: number): Promise<void> {
    await this.run((h) => { h.mergeAdapter(slot); h.dropAdapter(slot); });
  }
  adapterInfo(slot: number): NativeAdapterInfo | null { return this.live().adapterInfo(slot); }
  getAdapterTensor(slot: number, layer: number, proj: ProjName, which: 'A' | 'B', grad = false): Float32Array {
    return this.live().getAdapterTensor(slot, layer, proj, which, grad);
  }
  setAdapterTensor(slot: number, layer: number, proj: ProjName, which: 'A' | 'B', data: Float32Array): void {
    this.live().setAdapterTensor(slot, layer, proj, which, data);
  }

  // ---- packed (low-level) calls ----
  forwardPacked(batch: PackedBatch, options: { logits?: boolean } = {}): Promise<{ loss?: Float32Array; logits?: Float32Array }> {
    return this.run((h) => h.forward(batch, options));
  }
  backwardPacked(batch: PackedBatch, options: { full?: boolean; seed?: number } = {}): Promise<{ loss?: Float32Array }> {
    return this.run((h) => h.backward(batch, options));
  }
  optimizerStep(options: { full?: boolean; slots?: number[]; lr: number; lrs?: number[]; beta1?: number; beta2?: number; eps?: number; weightDecay?: number; maxGradNorm?: number }): Promise<number[]> {
    return this.run((h) => h.step(options));
  }
  zeroGrad(): Promise<void> { return this.run((h) => h.zeroGrad()); }

  // ---- sequence-level calls ----
  /** Log-likelihood of every sequence under its adapter (teacher forcing). */
  async score(sequences: Sequence[]): Promise<ScoreResult> {
    const packed = packSequences(sequences, this.config.vocabSize);
    const { loss } = await this.forwardPacked(packed.batch);
    if (!loss) throw new Error('score: the engine returned no losses');
    let total = 0;
    let count = 0;
    const out = packed.offsets.map((off, i) => {
      const len = packed.lengths[i] ?? 0;
      const logprobs = new Float32Array(Math.max(0, len - 1));
      let sum = 0;
      for (let t = 0; t < len - 1; t++) {
        const l = loss[off + t] ?? 0;
        logprobs[t] = -l;
        sum += l;
      }
      total += sum;
      count += len - 1;
      return { logprobs, nll: len > 1 ? sum / (len - 1) : 0 };
    });
    return { tokens: count, nll: count > 0 ? total / count : 0, sequences: out };
  }

  /** Full logits [len, vocab] of each sequence (tests and inspection; memory grows with vocab). */
  async logits(sequences: Sequence[]): Promise<Float32Array[]> {
    const packed = packSequences(sequences, this.config.vocabSize);
    const { logits } = await this.forwardPacked(packed.batch, { logits: true });
    if (!logits) throw new Error('logits: the engine returned none');
    const V = this.config.vocabSize;
    return packed.offsets.map((off, i) => logits.slice(off * V, (off + (packed.lengths[i] ?? 0)) * V));
  }

  /**
   * One optimiser step on a batch. The loss of each trained group (an adapter slot, or the whole
   * model in full mode) is the mean over its own training targets, so a batch mixing several
   * adapters trains each exactly as if it were alone.
   */
  async trainStep(sequences: Sequence[], options: TrainStepOptions): Promise<TrainStepResult> {
    const step = this.planTrainStep(sequences, options);
    // The backward pass and the optimiser step as one engine call (backwardPacked + optimizerStep).
    const out = await this.run((h) => h.trainStep(...step.args));
    return step.result(out.loss, out.norms);
  }

  /**
   * Several training steps, each exactly as trainStep(sequences, options) would run it, in order,
   * as one engine call. A small step (SEAL's inner loop: one short sequence per adapter on a small
   * model) takes a millisecond or two, and every engine call adds two thread handoffs (to a worker
   * and back to JavaScript); here they are paid once for all the steps. Every step is checked before
   * any runs. If a step fails in the engine, the promise rejects naming it, and the steps before it
   * have been applied (as with trainStep called in a loop).
   */
  async trainSteps(steps: readonly { sequences: Sequence[]; options: TrainStepOptions }[]): Promise<TrainStepResult[]> {
    if (steps.length === 0) return [];
    const planned = steps.map((s, i) => {
      try {
        return this.planTrainStep(s.sequences, s.options);
      } catch (e) {
        throw new Error(`trainSteps: step ${i}: ${(e as Error).message}`);
      }
    });
    const outs = await this.run((h) => h.trainSteps(planned.map((p) => p.args)));
    return outs.map((o, i) => planned[i]!.result(o.loss, o.norms));
  }

  // One training step's engine arguments (its sequences packed, each target weighted by 1 / its
  // group's target count) and how to turn the engine's per-token losses and norms into its result.
  private planTrainStep(sequences: Sequence[], options: TrainStepOptions): {
    args: [PackedBatch, { full: boolean; seed: number }, NativeStepOptions];
    result: (loss: Float32Array | undefined, norms: number[]) => TrainStepResult;
  } {
    const full = options.mode === 'full';
    if (full && sequences.some((s) => (s.slot ?? -1) >= 0)) throw new Error('trainStep: full mode trains the base model; sequences must not name adapter slots');
    if (!full && sequences.some((s) => (s.slot ?? -1) < 0)) throw new Error('trainStep: lora mode needs every sequence to name an adapter slot');
    const packed = packSequences(sequences, this.config.vocabSize, true);
    const weights = packed.batch.weights;
    if (!weights) throw new Error('internal: no weights');
    const groups = new Map<number, number>();
    packed.offsets.forEach((off, i) => {
      const slot = full ? -1 : (sequences[i]?.slot ?? -1);
      let n = groups.get(slot) ?? 0;
      for (let t = 0; t < (packed.lengths[i] ?? 0); t++) n += weights[off + t] ?? 0;
      groups.set(slot, n);
    });
    for (const [slot, n] of groups) if (n <= 0) throw new Error(`trainStep: ${slot < 0 ? 'the batch' : `adapter slot ${slot}`} has no training targets`);
    packed.offsets.forEach((off, i) => {
      const n = groups.get(full ? -1 : (sequences[i]?.slot ?? -1)) ?? 1;
      for (let t = 0; t < (packed.lengths[i] ?? 0); t++) weights[off + t] = (weights[off + t] ?? 0) / n;
    });
    const slots = full ? [] : [...groups.keys()].sort((a, b) => a - b);
    const lrs = options.slotLr ? slots.map((s) => options.slotLr?.get(s) ?? options.lr) : undefined;
    const stepOptions: NativeStepOptions = {
      full, slots, lr: options.lr, ...(lrs ? { lrs } : {}), beta1: options.beta1, beta2: options.beta2, eps: options.eps,
      weightDecay: options.weightDecay ?? 0, maxGradNorm: options.maxGradNorm ?? 1,
    };
    const result = (loss: Float32Array | undefined, norms: number[]): TrainStepResult => {
      const lossBy = new Map<number, number>();
      packed.offsets.forEach((off, i) => {
        const slot = full ? -1 : (sequences[i]?.slot ?? -1);
        let s = lossBy.get(slot) ?? 0;
        for (let t = 0; t < (packed.lengths[i] ?? 0); t++) s += (loss?.[off + t] ?? 0) * (weights[off + t] ?? 0);
        lossBy.set(slot, s);
      });
      const gradNorm = new Map<number, number>();
      (full ? [-1] : slots).forEach((slot, i) => gradNorm.set(slot, norms[i] ?? NaN));
      let tokens = 0;
      for (const n of groups.values()) tokens += n;
      return { loss: lossBy, gradNorm, tokens };
    };
    return { args: [packed.batch, { full, seed: options.seed ?? 0 }, stepOptions], result };
  }

  /** Generates continuations of token prompts (see lib/model/generate.ts for the options). */
  generate(prompts: Prompt[], options: GenerateOptions = {}): Promise<Completion[]> {
    return generate(this, prompts, options);
  }

  /** Streams generated tokens as they are sampled. */
  generateStream(prompts: Prompt[], options: GenerateOptions = {}): AsyncGenerator<GenerationEvent> {
    return generateStream(this, prompts, options);
  }

  /** Writes a loadable Hugging Face directory: config.json, model.safetensors, tokenizer files. */
  async save(dir: string): Promise<void> {
    await this.queue;
    await mkdir(dir, { recursive: true });
    const tensors: Record<string, TensorToWrite> = {};
    for (const name of this.paramNames()) {
      const data = this.getParam(name);
      const shape = this.live().paramShape(name).shape;
      const isMatrix = shape.length === 2;
      if (this.storage === 'bf16' && isMatrix) {
        // Values came from bf16 storage, so keeping the upper 16 bits is exact.
        const u32 = new Uint32Array(data.buffer, data.byteOffset, data.length);
        const bf = new Uint16Array(data.length);
        for (let i = 0; i < data.length; i++) bf[i] = (u32[i] ?? 0) >>> 16;
        tensors[name] = { dtype: 'BF16', shape, data: bf };
      } else {
        tensors[name] = { dtype: 'F32', shape, data };
      }
    }
    await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
    const config: ModelConfig = { ...this.config, torchDtype: this.storage === 'bf16' ? 'bfloat16' : 'float32' };
    await writeModelConfig(dir, config);
    if (this.sourceDir && resolve(this.sourceDir) !== resolve(dir)) {
      const names = new Set(['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja', 'chat_template.json', 'generation_config.json']);
      for (const f of await readdir(this.sourceDir)) if (names.has(f)) await copyFile(join(this.sourceDir, f), join(dir, f));
    }
  }

  /** Frees native memory. Idempotent; waits for queued calls. */
  async dispose(): Promise<void> {
    await this.queue;
    this.handle?.dispose();
    this.handle = undefined;
  }
}

interface Packed {
  batch: PackedBatch;
  offsets: number[];
  lengths: number[];
}

/** Packs sequences back to back with next-token targets; weights from trainMask when training. */
export function packSequences(sequences: Sequence[], vocabSize: number, training = false): Packed {
  if (sequences.length === 0) throw new Error('batch has no sequences');
  let total = 0;
  const offsets: number[] = [];
  const lengths: number[] = [];
  sequences.forEach((s, i) => {
    if (s.tokens.length === 0) throw new Error(`sequence ${i} is empty`);
    if (s.trainMask && s.trainMask.length !== s.tokens.length) throw new Error(`sequence ${i}: trainMask has ${s.trainMask.length} entries for ${s.tokens.length} tokens`);
    offsets.push(total);
    lengths.push(s.tokens.length);
    total += s.tokens.length;
  });
  const tokens = new Int32Array(total);
  const targets = new Int32Array(total).fill(-1);
  const weights = training ? new Float32Array(total) : undefined;
  const seqLens = Int32Array.from(lengths);
  const slots = Int32Array.from(sequences.map((s) => s.slot ?? -1));
  sequences.forEach((s, i) => {
    const off = offsets[i] ?? 0;
    for (let t = 0; t < s.tokens.length; t++) {
      const id = s.tokens[t] ?? -1;
      if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new Error(`sequence ${i}: token ${t} = ${id} is outside the vocabulary [0, ${vocabSize})`);
      tokens[off + t] = id;
      if (t > 0) {
        targets[off + t - 1] = id;
        if (weights) weights[off + t - 1] = s.trainMask ? Number(s.trainMask[t] ?? 0) : 1;
      }
    }
  });
  return { batch: { tokens, seqLens, slots, targets, ...(weights ? { weights } : {}) }, offsets, lengths };
}
