// The small model of the toy few-shot family (toy-family.ts), pretrained by the project from
// random weights: its tokenizer, its pretraining corpus and the pretraining loop. `seal demo arc`
// runs SEAL's few-shot experiment on it; scripts/build-toy-arc-model.sh regenerates it.
//
// Tokenizer: a real Hugging Face tokenizer.json — a regex split (grid syntax, then GPT-2's pattern)
// and byte-level mapping as pre-tokenizer, a WordPiece
// model (greedy longest match, empty continuation prefix) over every byte plus the pieces of the
// texts the domain writes (grid rows, the reference's instructions, the self-edit JSON), the
// byte-level decoder (decode(encode(s)) === s for any text) and a post-processor adding the BOS.
// Its special tokens are Llama-3's chat markup, so the reference's hand-wrapped self-edit prompt and
// a Llama-3-style chat template apply unchanged.
//
// Corpus (nothing in it says which TTT configuration is good):
//   - tasks of the toy family in the TTT/inference chat format of the reference (§4.5), with 1–3
//     demonstrations, loss on every token: the model learns the grid format and the
//     transformations, and some in-context inference of which transformation a task uses;
//   - self-edit documents: the reference's self-edit prompt for a toy task followed by a TTT
//     configuration drawn at random (augmentation flags, loss strategy, learning rate and epochs
//     from wide ranges, independently of the task): the model learns to write valid
//     configurations of varied quality.
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { normaliseModelConfig } from '../../model/hf-config.js';
import { Model, type Sequence } from '../../model/model.js';
import { learningRate } from '../../model/schedule.js';
import { TextTokenizer } from '../../model/tokenizer.js';
import { native } from '../../native.js';
import { Rng } from '../../util/rng.js';
import { arcChatRenderer, arcSeed, arcSelfEditPromptTokens, encodeRendered } from './domain.js';
import type { PseudoTask } from './grid.js';
import { queryPrompt, TTT_INSTRUCTION } from './grid-format.js';
import { SELF_EDIT_INSTRUCTION, SELF_EDIT_SYSTEM_MESSAGE, selfEditPrompt, toSelfEditJson, type SelfEditConfig } from './self-edit-config.js';
import { toyTask, TOY_SPLIT_SEEDS, type ToyTaskOptions } from './toy-family.js';
import { trainingText } from './ttt-data.js';

// ---------------------------------------------------------------------------------------------
// Tokenizer

export const TOY_SPECIAL_TOKENS = ['<|begin_of_text|>', '<|eot_id|>', '<|start_header_id|>', '<|end_header_id|>', '<pad>', '<unk>'] as const;
export const TOY_BOS = '<|begin_of_text|>';
export const TOY_EOS = '<|eot_id|>';

/** GPT-2's byte → printable-character table (bytes_to_unicode). */
function byteTable(): string[] {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const table = new Array<string>(256);
  for (const b of bs) table[b] = String.fromCharCode(b);
  let n = 0;
  for (let b = 0; b < 256; b++) if (table[b] === undefined) table[b] = String.fromCharCode(256 + n++);
  return table;
}
const BYTES = byteTable();
/**
 * The pre-tokenizer's pattern (a Split, then byte-level mapping): grid syntax first, so a grid of
 * h×w cells is hw + h + 1 tokens (`[[`, one token per cell with its leading space, one per row
 * boundary `]\n [`, `]]`), then GPT-2's pattern except that a run of newlines with the spaces
 * before it is one piece (as in Llama-3), so "\n\n" tokenises alike at the end of a prompt and
 * inside a text.
 */
export const TOY_SPLIT_PATTERN = String.raw`\]\]#|\]\n \[| ?\[\[|\]\]|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s*[\r\n]+|\s+(?!\S)|\s+`;
const SPLIT = new RegExp(TOY_SPLIT_PATTERN, 'gu');

/** Pieces of a text as the pre-tokenizer cuts them, in byte-level form. */
export function toyPretokenize(text: string): string[] {
  return [...text.matchAll(SPLIT)].map((m) => [...new TextEncoder().encode(m[0])].map((b) => BYTES[b]!).join(''));
}

/** The chat template: Llama-3's turn markup, no date header. */
export const TOY_CHAT_TEMPLATE =
  "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>{% endfor %}" +
  "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";

/** Learning rates and epochs the pretraining corpus's self-edits are drawn from (wide on purpose). */
export const TOY_SELF_EDIT_LRS = [0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1] as const;
export const TOY_SELF_EDIT_EPOCHS = [1, 2, 3, 4, 5, 6, 8, 10] as const;

/** A configuration drawn independently of the task: the pretrained policy's starting distribution. */
export function randomSelfEditConfig(rng: Rng): SelfEditConfig {
  const flag = () => rng.uniform() < 0.5;
  return {
    augmentations: { basic: flag(), size: flag(), chain: flag(), repeat: flag() },
    lossOn: flag() ? 'all' : 'output',
    learningRate: TOY_SELF_EDIT_LRS[rng.below(TOY_SELF_EDIT_LRS.length)]!,
    epochs: TOY_SELF_EDIT_EPOCHS[rng.below(TOY_SELF_EDIT_EPOCHS.length)]!,
  };
}

/** The text of a self-edit (compact JSON, the reference's schema). */
export function selfEditText(c: SelfEditConfig): string {
  return JSON.stringify(toSelfEditJson(c));
}

function templateRender(messages: { role: string; content: string }[], addGenerationPrompt: boolean): string {
  let out = TOY_BOS;
  for (const m of messages) out += `<|start_header_id|>${m.role}<|end_header_id|>\n\n${m.content.trim()}<|eot_id|>`;
  if (addGenerationPrompt) out += '<|start_header_id|>assistant<|end_header_id|>\n\n';
  return out;
}

/** Texts whose pieces make the vocabulary: instructions, sample tasks, self-edit prompts and configurations. */
function vocabularyTexts(): string[] {
  const texts = [TTT_INSTRUCTION, SELF_EDIT_SYSTEM_MESSAGE, SELF_EDIT_INSTRUCTION];
  const render = (m: readonly { role: string; content: string }[], o: { addGenerationPrompt: boolean }) => templateRender([...m], o.addGenerationPrompt);
  for (let i = 0; i < 40; i++) {
    const t = toyTask(7, i, { demos: 3, maxSide: 6 });
    const pt: PseudoTask = { train: t.train.slice(0, 2), test: t.train[2]! };
    texts.push(trainingText(pt, 'all', { render, trailingGenerationPrompt: false }).text, queryPrompt(pt, render), selfEditPrompt(t.train));
  }
  const rng = new Rng(11);
  for (let i = 0; i < 200; i++) texts.push(selfEditText(randomSelfEditConfig(rng)));
  for (const lr of TOY_SELF_EDIT_LRS) for (const e of TOY_SELF_EDIT_EPOCHS) texts.push(JSON.stringify({ learning_rate: lr, num_train_epochs: e }));
  return texts;
}

/** The vocabulary in id order: special tokens, the 256 byte characters, then the pieces (sorted). */
export function toyVocabulary(): string[] {
  const pieces = new Set<string>();
  for (const text of vocabularyTexts()) {
    // Special tokens are split out before pre-tokenization.
    for (const part of text.split(/<\|[a-z_]+\|>/)) for (const p of toyPretokenize(part)) if (p.length >= 2) pieces.add(p);
  }
  const vocab = [...TOY_SPECIAL_TOKENS, ...BYTES, ...[...pieces].filter((p) => !BYTES.includes(p)).sort()];
  if (new Set(vocab).size !== vocab.length) throw new Error('toy tokenizer: duplicate vocabulary entries');
  return vocab;
}

export function toyTokenizerJson(vocab: readonly string[] = toyVocabulary()): Record<string, unknown> {
  const special = (content: string, id: number) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: TOY_SPECIAL_TOKENS.map((t, i) => special(t, i)),
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: TOY_SPLIT_PATTERN }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: TOY_BOS, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: TOY_BOS, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { [TOY_BOS]: { id: TOY_BOS, ids: [0], tokens: [TOY_BOS] } },
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'WordPiece', unk_token: '<unk>', continuing_subword_prefix: '', max_input_chars_per_word: 200, vocab: Object.fromEntries(vocab.map((t, i) => [t, i])) },
  };
}

export function toyTokenizerConfigJson(maxLength: number): Record<string, unknown> {
  return {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: TOY_BOS, eos_token: TOY_EOS, pad_token: '<pad>', unk_token: '<unk>',
    add_bos_token: true, add_eos_token: false, model_max_length: maxLength, clean_up_tokenization_spaces: false,
    chat_template: TOY_CHAT_TEMPLATE,
  };
}

/** Writes tokenizer.json and tokenizer_config.json; returns the vocabulary size. */
export async function writeToyTokenizer(dir: string, maxLength: number): Promise<number> {
  const vocab = toyVocabulary();
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'tokenizer.json'), `${JSON.stringify(toyTokenizerJson(vocab))}\n`);
  await writeFile(join(dir, 'tokenizer_config.json'), `${JSON.stringify(toyTokenizerConfigJson(maxLength), null, 2)}\n`);
  return vocab.length;
}

// ---------------------------------------------------------------------------------------------
// Architecture and corpus

export const TOY_ARC_ARCHITECTURE = {
  model_type: 'llama',
  architectures: ['LlamaForCausalLM'],
  hidden_size: 128,
  intermediate_size: 384,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 4,
  head_dim: 32,
  hidden_act: 'silu',
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  max_position_embeddings: 1024,
  tie_word_embeddings: true,
  attention_bias: false,
  mlp_bias: false,
  bos_token_id: 0,
  eos_token_id: 1,
  pad_token_id: 4,
  torch_dtype: 'float32',
} as const;

export interface ToyCorpusOptions {
  seed: number;
  /** Share of self-edit documents (default 0.1). */
  selfEditShare?: number;
  /** Demonstrations per task document are drawn from 1..maxDemos (default 5). */
  maxDemos?: number;
  task?: ToyTaskOptions;
}

export type ToyDocKind = 'task' | 'self-edit';

/** Documents of step s depend only on (seed, s): deterministic and resumable. */
export class ToyArcCorpus {
  readonly #tok: TextTokenizer;
  readonly #o: Required<Omit<ToyCorpusOptions, 'task'>> & { task: ToyTaskOptions };
  readonly #render;
  constructor(tok: TextTokenizer, o: ToyCorpusOptions) {
    this.#tok = tok;
    this.#o = { selfEditShare: 0.1, maxDemos: 5, task: {}, ...o };
    this.#render = arcChatRenderer(tok);
  }

  document(step: number, k: number): { kind: ToyDocKind; tokens: number[]; trainMask: number[] } {
    const rng = new Rng(arcSeed(this.#o.seed, 'doc', step, k));
    const index = step * 1024 + k;
    if (rng.uniform() < this.#o.selfEditShare) {
      const t = toyTask(TOY_SPLIT_SEEDS.pretrain, index, { ...this.#o.task, demos: 3 });
      const prompt = arcSelfEditPromptTokens(this.#tok, t.train);
      const completion = [...this.#tok.encode(selfEditText(randomSelfEditConfig(rng)), { addSpecialTokens: false }), this.#tok.eosTokenIds[0]!];
      const tokens = [...prompt, ...completion];
      // The prompt is the same long instruction every time: loss on the configuration only.
      return { kind: 'self-edit', tokens, trainMask: tokens.map((_, i) => (i >= prompt.length ? 1 : 0)) };
    }
    const demos = 1 + rng.below(this.#o.maxDemos);
    const t = toyTask(TOY_SPLIT_SEEDS.pretrain, index, { ...this.#o.task, demos, tests: 1 });
    const text = trainingText({ train: t.train, test: t.test[0]! }, 'all', { render: this.#render, trailingGenerationPrompt: false }).text;
    const tokens = encodeRendered(this.#tok, text);
    return { kind: 'task', tokens, trainMask: this.outputMask(tokens) };
  }

  /**
   * Loss on output grids only (every demonstration's and the answer's): the tokens after each
   * ` ->` through the next `]]#` (and the end of the turn). Input grids are random; their tokens
   * would only add noise to the gradient.
   */
  outputMask(tokens: readonly number[]): number[] {
    const arrow = this.#tok.tokenToId('Ġ->');
    const end = this.#tok.tokenToId(']]#');
    let on = false;
    return tokens.map((id, i) => {
      if (i > 0 && on && tokens[i - 1] === end) on = false;
      const m = on ? 1 : 0;
      if (id === arrow) on = true;
      if (!on && i > 0 && tokens[i - 1] === end && this.#tok.eosTokenIds.includes(id)) return 1;
      return m;
    });
  }

  /** Whole documents until `batchTokens` training tokens. */
  batch(step: number, batchTokens: number): { sequences: Sequence[]; kinds: ToyDocKind[] } {
    const sequences: Sequence[] = [];
    const kinds: ToyDocKind[] = [];
    let n = 0;
    for (let k = 0; n < batchTokens; k++) {
      const d = this.document(step, k);
      sequences.push({ tokens: d.tokens, trainMask: d.trainMask });
      kinds.push(d.kind);
      n += d.tokens.length;
    }
    return { sequences, kinds };
  }
}

// ---------------------------------------------------------------------------------------------
// Pretraining

export interface ToyPretrainOptions {
  outDir: string;
  seed: number;
  steps: number;
  batchTokens: number;
  lr: number;
  warmup: number;
  minLrRatio: number;
  weightDecay: number;
  beta2: number;
  maxGradNorm: number;
  threads?: number;
  corpus?: Omit<ToyCorpusOptions, 'seed'>;
  /** Also save the model after these steps, to outDir/step-N (for choosing a pretraining length). */
  saveAt?: readonly number[];
  /** Backend (default cpu). */
  device?: 'cpu' | 'cuda';
  /**
   * Continue from this model directory (a toy-arc model: same architecture and tokenizer) instead
   * of random weights: a later stage of the recipe. Its training.json is kept in ours as `init`.
   */
  init?: string;
  /** Stop (and save) once this much wall time has passed, before `steps` if need be. */
  maxSeconds?: number;
  onStep?: (info: { step: number; total: number; loss: number; tokens: number; lr: number; seconds: number }) => void;
}

export const DEFAULT_TOY_PRETRAIN: Omit<ToyPretrainOptions, 'outDir'> = {
  seed: 1, steps: 7000, batchTokens: 3072, lr: 4e-3, warmup: 100, minLrRatio: 0.1, weightDecay: 0.1, beta2: 0.95, maxGradNorm: 1,
};

export interface ToyPretrainResult {
  outDir: string;
  steps: number;
  tokens: number;
  finalLossMean: number;
  seconds: number;
}

/** The starting model's training.json (the earlier stages of the recipe). */
async function readInitTraining(dir: string): Promise<unknown> {
  const file = join(dir, 'training.json');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    throw new Error(`toy-arc pretrain: --init ${dir} has no training.json (expected a toy-arc model made by this command)`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new Error(`toy-arc pretrain: ${file} is not valid JSON (${(err as Error).message})`);
  }
}

/** The starting model must have the toy architecture (its vocabulary padded as ours). */
function checkInitModel(dir: string, model: Model, raw: typeof TOY_ARC_ARCHITECTURE & { vocab_size: number }): void {
  const c = model.config;
  const want = { hiddenSize: raw.hidden_size, numLayers: raw.num_hidden_layers, numHeads: raw.num_attention_heads, vocabSize: raw.vocab_size };
  for (const [k, v] of Object.entries(want)) {
    const got = (c as unknown as Record<string, number>)[k];
    if (got !== v) throw new Error(`toy-arc pretrain: --init ${dir}: ${k} is ${got}, the toy-arc architecture has ${v}`);
  }
}

export async function pretrainToyArc(o: ToyPretrainOptions): Promise<ToyPretrainResult> {
  if (o.threads !== undefined) native().setThreads(o.threads);
  const threads = native().info().threads;
  await mkdir(o.outDir, { recursive: true });
  const maxLen = TOY_ARC_ARCHITECTURE.max_position_embeddings;
  const vocabSize = await writeToyTokenizer(o.outDir, maxLen);
  await writeFile(join(o.outDir, 'generation_config.json'), `${JSON.stringify({ bos_token_id: 0, eos_token_id: 1, pad_token_id: 4 }, null, 2)}\n`);
  const tok = await TextTokenizer.load(o.outDir);
  const raw = { ...TOY_ARC_ARCHITECTURE, vocab_size: Math.ceil(vocabSize / 16) * 16 };
  const initTraining = o.init === undefined ? undefined : await readInitTraining(o.init);
  const model = o.init === undefined
    ? await Model.create(normaliseModelConfig(structuredClone(raw) as Record<string, unknown>, 'toy-arc architecture'), { seed: o.seed, initStd: 0.02, ...(o.device ? { device: o.device } : {}) })
    : await Model.load(o.init, o.device ? { device: o.device } : {});
  if (o.init !== undefined) checkInitModel(o.init, model, raw);
  const corpus = new ToyArcCorpus(tok, { ...o.corpus, seed: o.seed });
  const t0 = Date.now();
  const losses: number[] = [];
  let tokens = 0;
  let done = 0;
  const kindTokens: Record<ToyDocKind, number> = { task: 0, 'self-edit': 0 };
  try {
    for (let step = 1; step <= o.steps; step++) {
      const { sequences, kinds } = corpus.batch(step, o.batchTokens);
      kinds.forEach((k, i) => { kindTokens[k] += sequences[i]!.tokens.length; });
      const lr = learningRate({ kind: 'cosine', lr: o.lr, total: o.steps, warmup: o.warmup, minLr: o.lr * o.minLrRatio }, step);
      const r = await model.trainStep(sequences, { mode: 'full', lr, beta2: o.beta2, weightDecay: o.weightDecay, maxGradNorm: o.maxGradNorm, seed: o.seed * 1_000_003 + step });
      const loss = r.loss.get(-1) ?? NaN;
      if (!Number.isFinite(loss)) throw new Error(`toy-arc pretrain: loss is ${loss} at step ${step} (lr ${lr})`);
      losses.push(loss);
      tokens += r.tokens;
      done = step;
      o.onStep?.({ step, total: o.steps, loss, tokens, lr, seconds: (Date.now() - t0) / 1000 });
      if (o.saveAt?.includes(step) && step < o.steps) {
        const dir = join(o.outDir, `step-${step}`);
        await model.save(dir);
        await writeToyTokenizer(dir, maxLen);
        await writeFile(join(dir, 'generation_config.json'), `${JSON.stringify({ bos_token_id: 0, eos_token_id: 1, pad_token_id: 4 }, null, 2)}\n`);
      }
      if (o.maxSeconds !== undefined && (Date.now() - t0) / 1000 > o.maxSeconds) break;
    }
    await model.save(o.outDir);
  } finally {
    await model.dispose();
  }
  const seconds = (Date.now() - t0) / 1000;
  const tail = losses.slice(-50);
  const finalLossMean = tail.reduce((a, b) => a + b, 0) / Math.max(1, tail.length);
  const cpu = cpus()[0];
  const { onStep: _o, outDir: _d, saveAt: _s, init: _i, ...recipe } = o;
  const training = {
    recipe: {
      ...recipe, schedule: 'linear warmup + cosine', optimizer: 'AdamW', beta1: 0.9,
      ...(o.init === undefined ? { initStd: 0.02 } : { init: 'continued from the model described under "init"' }),
      corpus: { seed: o.seed, selfEditShare: 0.1, maxDemos: 5, ...o.corpus },
    },
    architecture: raw,
    vocabulary: { tokens: vocabSize, padded: raw.vocab_size },
    steps_done: done,
    tokens,
    tokens_by_document_kind: kindTokens,
    final_loss_mean_last_50: Number(finalLossMean.toFixed(4)),
    loss_every_50_steps: losses.filter((_, i) => (i + 1) % 50 === 0 || i === 0).map((l) => Number(l.toFixed(4))),
    wall_seconds: Number(seconds.toFixed(1)),
    machine: { cpu: cpu?.model ?? 'unknown', logical_cpus: cpus().length, engine_threads: threads, memory_gib: Number((totalmem() / 2 ** 30).toFixed(1)), node: process.version },
    ...(initTraining !== undefined ? { init: initTraining } : {}),
  };
  await writeFile(join(o.outDir, 'training.json.tmp'), `${JSON.stringify(training, null, 2)}\n`);
  await rename(join(o.outDir, 'training.json.tmp'), join(o.outDir, 'training.json'));
  return { outDir: o.outDir, steps: done, tokens, finalLossMean, seconds };
}
