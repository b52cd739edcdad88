// Pretraining of the embedded toy-world model: a small Llama trained from random weights with all
// parameters on the pretraining corpus (corpus.ts), AdamW with linear warmup, a constant phase and a
// cosine decay.
// Writes a Hugging Face directory (config.json, model.safetensors, tokenizer.json,
// tokenizer_config.json, generation_config.json, training.json) and checkpoints on the way.
//
// Determinism: the data of step s depends only on (seed, s) and the initial weights only on the
// seed, so the same seed and thread count give the same model. A resumed run restores the weights
// and the step from a checkpoint; AdamW's moments are NOT restored (they restart at zero, after a
// fresh warmup of `resumeWarmup` steps), so a resumed run is close to, not bit-identical with, an
// uninterrupted one.
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { normaliseModelConfig } from '../../model/hf-config.js';
import { Model } from '../../model/model.js';
import { learningRate } from '../../model/schedule.js';
import { TextTokenizer } from '../../model/tokenizer.js';
import { native } from '../../native.js';
import { DEFAULT_CORPUS, DOC_KINDS, PretrainCorpus, type CorpusOptions } from './corpus.js';
import { BOS_ID, EOS_ID, PAD_ID, writeTokenizer } from './tokenizer.js';
import { makeWorld, WORLD_PRESETS } from './world.js';

/** The architecture of the embedded model (config.json; vocab_size is set from the tokenizer). */
export const TOYWORLD_ARCHITECTURE = {
  model_type: 'llama',
  architectures: ['LlamaForCausalLM'],
  hidden_size: 192,
  intermediate_size: 512,
  num_hidden_layers: 4,
  num_attention_heads: 6,
  num_key_value_heads: 6,
  head_dim: 32,
  hidden_act: 'silu',
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  max_position_embeddings: 512,
  tie_word_embeddings: true,
  attention_bias: false,
  mlp_bias: false,
  bos_token_id: BOS_ID,
  eos_token_id: EOS_ID,
  pad_token_id: PAD_ID,
  torch_dtype: 'float32',
} as const;

export interface PretrainOptions {
  outDir: string;
  seed: number;
  steps: number;
  /** Training tokens per step (documents are whole; a batch ends at the first document past it). */
  batchTokens: number;
  /** Longest document in tokens. */
  maxSeq: number;
  lr: number;
  /** The cosine decays to lr * minLrRatio. */
  minLrRatio: number;
  /** Fraction of the steps at the peak rate before the cosine decay starts (warmup-stable-decay). */
  stableFraction: number;
  warmup: number;
  weightDecay: number;
  beta2: number;
  maxGradNorm: number;
  /** Save a checkpoint every this many steps (0 = none). */
  checkpointEvery: number;
  /** Engine threads (default: the engine's). */
  threads?: number;
  /** Continue from this checkpoint directory (written by an earlier run with the same recipe). */
  resumeDir?: string;
  /** Warmup steps after a resume (AdamW's moments restart). */
  resumeWarmup: number;
  corpus: Omit<CorpusOptions, 'seed' | 'maxTokens'>;
  onStep?: (info: { step: number; total: number; loss: number; tokens: number; lr: number; seconds: number }) => void;
  onCheckpoint?: (dir: string, step: number) => void;
}

export const DEFAULT_PRETRAIN: Omit<PretrainOptions, 'outDir'> = {
  seed: 1,
  steps: 4500,
  batchTokens: 2048,
  maxSeq: 256,
  lr: 1e-3,
  minLrRatio: 0.1,
  stableFraction: 0.6,
  warmup: 100,
  weightDecay: 0.1,
  beta2: 0.95,
  maxGradNorm: 1,
  checkpointEvery: 250,
  resumeWarmup: 20,
  corpus: {
    coreEntities: DEFAULT_CORPUS.coreEntities, shares: { ...DEFAULT_CORPUS.shares },
    ...(DEFAULT_CORPUS.warmStart ? { warmStart: { steps: DEFAULT_CORPUS.warmStart.steps, shares: { ...DEFAULT_CORPUS.warmStart.shares } } } : {}),
    freshNames: DEFAULT_CORPUS.freshNames, icqaQuestions: DEFAULT_CORPUS.icqaQuestions, weights: { ...DEFAULT_CORPUS.weights },
  },
};

export interface PretrainResult {
  outDir: string;
  steps: number;
  startStep: number;
  finalLoss: number;
  /** Mean loss of the last 50 steps. */
  finalLossMean: number;
  tokens: number;
  seconds: number;
}

interface TrainerState {
  step: number;
  seed: number;
  recipe: unknown;
  losses: number[];
  tokens: number;
  seconds: number;
}

function recipeOf(o: Omit<PretrainOptions, 'outDir'>): Record<string, unknown> {
  return {
    seed: o.seed, steps: o.steps, batchTokens: o.batchTokens, maxSeq: o.maxSeq, lr: o.lr, minLrRatio: o.minLrRatio, stableFraction: o.stableFraction, warmup: o.warmup,
    weightDecay: o.weightDecay, beta1: 0.9, beta2: o.beta2, maxGradNorm: o.maxGradNorm, schedule: 'linear warmup, constant, cosine decay',
    optimizer: 'AdamW', initStd: 0.02, corpus: o.corpus, world: WORLD_PRESETS.pretrain,
  };
}

async function writeJson(path: string, value: unknown): Promise<void> {
  await writeFile(`${path}.tmp`, `${JSON.stringify(value, null, 2)}\n`);
  await rename(`${path}.tmp`, path);
}

/** Writes the model, tokenizer files and a generation config into `dir` (atomically replacing weights). */
async function saveAll(model: Model, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await model.save(dir);
  await writeTokenizer(dir, TOYWORLD_ARCHITECTURE.max_position_embeddings);
  await writeJson(join(dir, 'generation_config.json'), { bos_token_id: BOS_ID, eos_token_id: EOS_ID, pad_token_id: PAD_ID });
}

export async function pretrain(o: PretrainOptions): Promise<PretrainResult> {
  if (o.threads !== undefined) native().setThreads(o.threads);
  const threads = native().info().threads;
  await mkdir(o.outDir, { recursive: true });
  const vocabSize = await writeTokenizer(o.outDir, TOYWORLD_ARCHITECTURE.max_position_embeddings);
  const tok = await TextTokenizer.load(o.outDir);
  const paddedVocab = Math.ceil(vocabSize / 16) * 16;
  const raw = { ...TOYWORLD_ARCHITECTURE, vocab_size: paddedVocab };
  const world = makeWorld(WORLD_PRESETS.pretrain.seed, { entities: WORLD_PRESETS.pretrain.entities, split: 'pretrain' });
  const corpus = new PretrainCorpus(world, { ...o.corpus, seed: o.seed, maxTokens: o.maxSeq });
  const recipe = recipeOf(o);

  let model: Model;
  let startStep = 0;
  let losses: number[] = [];
  let tokens = 0;
  let priorSeconds = 0;
  if (o.resumeDir) {
    const statePath = join(o.resumeDir, 'trainer_state.json');
    if (!existsSync(statePath)) throw new Error(`--resume ${o.resumeDir}: no trainer_state.json (not a pretraining checkpoint)`);
    const state = JSON.parse(await readFile(statePath, 'utf8')) as TrainerState;
    if (state.seed !== o.seed) throw new Error(`--resume ${o.resumeDir}: checkpoint has seed ${state.seed}, this run ${o.seed}`);
    model = await Model.load(o.resumeDir);
    startStep = state.step;
    losses = state.losses;
    tokens = state.tokens;
    priorSeconds = state.seconds;
  } else {
    model = await Model.create(normaliseModelConfig(structuredClone(raw) as Record<string, unknown>, 'toyworld architecture'), { seed: o.seed, initStd: 0.02 });
  }

  const t0 = Date.now();
  const elapsed = (): number => priorSeconds + (Date.now() - t0) / 1000;
  const kindTokens = Object.fromEntries(DOC_KINDS.map((k) => [k, 0])) as Record<string, number>;
  try {
    for (let step = startStep + 1; step <= o.steps; step++) {
      const { sequences, docs } = corpus.batch(step, o.batchTokens, tok);
      docs.forEach((d, i) => { kindTokens[d.kind] = (kindTokens[d.kind] ?? 0) + (sequences[i]?.tokens.length ?? 0); });
      let lr = scheduledLr(o, step);
      if (startStep > 0 && step - startStep <= o.resumeWarmup) lr *= (step - startStep) / o.resumeWarmup;
      const r = await model.trainStep(sequences, {
        mode: 'full', lr, beta2: o.beta2, weightDecay: o.weightDecay, maxGradNorm: o.maxGradNorm, seed: rngSeed(o.seed, step),
      });
      const loss = r.loss.get(-1) ?? NaN;
      if (!Number.isFinite(loss)) throw new Error(`pretrain: loss is ${loss} at step ${step} (lr ${lr}); lower --lr`);
      losses.push(loss);
      tokens += sequences.reduce((a, q) => a + q.tokens.length, 0);
      o.onStep?.({ step, total: o.steps, loss, tokens, lr, seconds: elapsed() });
      if (o.checkpointEvery > 0 && step % o.checkpointEvery === 0 && step < o.steps) {
        const dir = join(o.outDir, 'checkpoints', `step-${step}`);
        await saveAll(model, dir);
        await writeJson(join(dir, 'trainer_state.json'), { step, seed: o.seed, recipe, losses, tokens, seconds: elapsed() } satisfies TrainerState);
        // Keep the newest two checkpoints.
        const old = join(o.outDir, 'checkpoints', `step-${step - 2 * o.checkpointEvery}`);
        if (existsSync(old)) await rm(old, { recursive: true, force: true });
        o.onCheckpoint?.(dir, step);
      }
    }
    await saveAll(model, o.outDir);
  } finally {
    await model.dispose();
  }
  const seconds = elapsed();
  const tail = losses.slice(-50);
  const result: PretrainResult = {
    outDir: o.outDir, steps: o.steps, startStep, finalLoss: losses.at(-1) ?? NaN,
    finalLossMean: tail.reduce((a, b) => a + b, 0) / Math.max(1, tail.length), tokens, seconds,
  };
  const cpu = cpus()[0];
  await writeJson(join(o.outDir, 'training.json'), {
    recipe,
    architecture: raw,
    vocabulary: { tokens: vocabSize, padded: paddedVocab },
    steps: o.steps,
    resumed_from_step: startStep || null,
    tokens,
    final_loss: result.finalLoss,
    final_loss_mean_last_50: result.finalLossMean,
    loss_every_50_steps: losses.filter((_, i) => (i + 1) % 50 === 0 || i === 0).map((l) => Number(l.toFixed(4))),
    tokens_by_document_kind_this_run: kindTokens,
    wall_seconds: Number(seconds.toFixed(1)),
    machine: { cpu: cpu?.model ?? 'unknown', logical_cpus: cpus().length, engine_threads: threads, memory_gib: Number((totalmem() / 2 ** 30).toFixed(1)), node: process.version, platform: `${process.platform}-${process.arch}` },
    optimizer_state_restored_on_resume: false,
  });
  return result;
}

/** Warmup to the peak, hold it for stableFraction of the steps, then cosine decay to lr * minLrRatio. */
export function scheduledLr(o: Pick<PretrainOptions, 'lr' | 'steps' | 'warmup' | 'stableFraction' | 'minLrRatio'>, step: number): number {
  const stable = Math.max(o.warmup, Math.round(o.steps * o.stableFraction));
  if (step <= stable) return learningRate({ kind: 'constant', lr: o.lr, total: o.steps, warmup: o.warmup }, step);
  return learningRate({ kind: 'cosine', lr: o.lr, total: o.steps - stable, minLr: o.lr * o.minLrRatio }, step - stable);
}

function rngSeed(seed: number, step: number): number {
  return (seed * 1_000_003 + step) % 2 ** 31;
}
