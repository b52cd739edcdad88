// The ARC self-edit: the prompt that asks the policy for a TTT configuration (reference §4.2), the
// configuration's schema, and a parser from free model text to a typed configuration (§4.3).
//
// A self-edit is a JSON object
//   { "data_generation": { "use_basic_augmentations": bool, "use_size_augmentations": bool,
//                          "use_chain_augmentations": bool, "use_repeat_augmentations": bool },
//     "training": { "strategy": "train_using_all_tokens" | "train_using_output_tokens",
//                   "learning_rate": float, "num_train_epochs": int } }
// Those seven fields are everything a self-edit controls. Fixed, not controllable (§4.3): leave-n
// {1, 2}, one colour/order-permuted copy per task, the 250-example cap, LoRA shape, batch size,
// scheduler, and the concat family (always off).
//
// How the reference decides validity (`self-edit.py: main`), and how it maps here:
//   - the whole completion must be JSON (`json.loads`), else it is discarded and sampling continues
//     → `{ok: false, stage: 'json'}`: the caller should resample, as the reference does;
//   - a missing/unreadable augmentation flag, a missing training field, or an unknown strategy do
//     not discard the self-edit: the reference trains it for 0 epochs, so it earns reward 0
//     → `{ok: false, stage: 'schema'}`: the caller counts it and gives it reward 0 without training;
//   - more than 375 optimizer steps at batch 2 (`epochs × len(train_data) // 2 > 375`) → 0 epochs,
//     known only once the TTT set is built → `checkStepBudget` (stage 'budget').
// Where the reference is silent or would crash (negative learning rate: torch raises; string
// values: the cost check raises; a missing top-level key: the de-dup step raises; truthy non-boolean
// flags: silently accepted), this parser is strict and documents its bounds:
//   - flags must be JSON booleans;
//   - learning_rate: a finite number with 0 < lr ≤ MAX_LEARNING_RATE (1.0 — beyond that Adam on a
//     LoRA only diverges);
//   - num_train_epochs: an integer, 1 ≤ epochs ≤ MAX_EPOCHS (751: the most any dataset of ≥ 1
//     example can pass the 375-step cap with; 0 epochs is "no training", the reference's own
//     marker of an invalid self-edit);
//   - unknown keys anywhere are rejected (the model would believe it controls something it does not;
//     in particular an unknown augmentation family is named in the reason).
//
// Extraction is lenient by default (`mode: 'lenient'`): surrounding prose, Markdown code fences and
// trailing text are tolerated and the first parseable JSON object is used. `mode: 'reference'`
// requires the whole text to be one JSON object, exactly like `json.loads` on the completion. In
// both modes a completion cut off mid-object (an unclosed `{`) is stage 'json', as in the reference.

import { z } from 'zod';
import type { AugmentationFamilies } from './augment.js';
import type { ArcExample, Grid } from './grid.js';

// ---------------------------------------------------------------------------------------------
// Prompt (reference §4.2)

/** EXPERIMENTAL PARAMETER (verbatim): the self-edit system message. */
export const SELF_EDIT_SYSTEM_MESSAGE =
  'You are a helpful assistant that provide the correct output for the given task immediately.';

/** EXPERIMENTAL PARAMETER (verbatim): the self-edit instruction; it begins and ends with a newline. */
export const SELF_EDIT_INSTRUCTION =
  '\nYou are configuring a model training pipeline by selecting from predefined tools.\n\n' +
  'You must make two decisions:\n\n' +
  '1. **Data Generation Tools** — For each of the following, choose true or false:\n' +
  '    - use_basic_augmentations\n    - use_size_augmentations\n' +
  '    - use_chain_augmentations\n    - use_repeat_augmentations\n\n' +
  '2. **Training Configuration** — Choose one of:\n    - "train_using_all_tokens"\n' +
  '    - "train_using_output_tokens"\n\nAlso specify:\n    - learning_rate (float)\n' +
  '    - num_train_epochs (integer)\n\n### Output Format\n\n' +
  'Respond with a valid JSON object. Do not include any explanation, markdown, or extra text. Use lowercase `true`/`false` for booleans and ensure correct JSON syntax.\n' +
  '\nExample output:\n\n{\n  "data_generation": {\n    "use_basic_augmentations": ...,\n' +
  '    "use_size_augmentations": ...,\n    "use_chain_augmentations": ...,\n' +
  '    "use_repeat_augmentations": ...\n  },\n  "training": {\n    "strategy": ...,\n' +
  '    "learning_rate": ...,\n    "num_train_epochs": ...\n  }\n}\n';

function rowsText(g: Grid): string {
  return g.map((row) => `${row.join(' ')}\n`).join('');
}

/**
 * The user turn of the self-edit prompt: every demonstration as `Input:\n` + rows, `\nOutput:\n` +
 * rows, `\n` (rows are space-separated digits, each followed by a newline; the test input is not
 * shown), then `------\n\n` and the instruction.
 */
export function selfEditUserMessage(demonstrations: readonly ArcExample[]): string {
  let user = '';
  for (const e of demonstrations) user += `Input:\n${rowsText(e.input)}\nOutput:\n${rowsText(e.output)}\n`;
  return `${user}------\n\n${SELF_EDIT_INSTRUCTION}`;
}

/**
 * The full self-edit prompt text, wrapped by hand in Llama-3 chat markup exactly as the reference
 * does (no template, no date header, ends with the assistant header). The reference sends it to
 * vLLM, which prepends its own BOS (double BOS, §4.2) — set `bos: false` to leave the BOS to the
 * tokenizer instead.
 */
export function selfEditPrompt(demonstrations: readonly ArcExample[], options: { bos?: boolean } = {}): string {
  const bos = (options.bos ?? true) ? '<|begin_of_text|>' : '';
  return (
    `${bos}<|start_header_id|>system<|end_header_id|>\n\n${SELF_EDIT_SYSTEM_MESSAGE}<|eot_id|>` +
    `<|start_header_id|>user<|end_header_id|>\n\n${selfEditUserMessage(demonstrations)}<|eot_id|>` +
    '<|start_header_id|>assistant<|end_header_id|>\n\n'
  );
}

/** The reference's sampling settings for self-edits (§4.2). */
export const SELF_EDIT_SAMPLING = { temperature: 0.8, maxTokens: 128 } as const;

// ---------------------------------------------------------------------------------------------
// Schema

export const STRATEGIES = ['train_using_all_tokens', 'train_using_output_tokens'] as const;
export type Strategy = (typeof STRATEGIES)[number];

/** Upper bound on learning_rate (reference silent; see the header). */
export const MAX_LEARNING_RATE = 1.0;
/** The reference's cost cap: at most this many optimizer steps (§4.3 rule 5). */
export const MAX_TTT_STEPS = 375;
/** The reference's fixed TTT batch size (§4.6), used by the cost cap. */
export const TTT_BATCH_SIZE = 2;
/** Largest epoch count that can pass the cost cap at all (a 1-example dataset). */
export const MAX_EPOCHS = 2 * MAX_TTT_STEPS + 1;

export const AUGMENTATION_KEYS = [
  'use_basic_augmentations',
  'use_size_augmentations',
  'use_chain_augmentations',
  'use_repeat_augmentations',
] as const;

export const selfEditSchema = z.strictObject({
  data_generation: z.strictObject({
    use_basic_augmentations: z.boolean(),
    use_size_augmentations: z.boolean(),
    use_chain_augmentations: z.boolean(),
    use_repeat_augmentations: z.boolean(),
  }),
  training: z.strictObject({
    strategy: z.enum(STRATEGIES),
    learning_rate: z.number().gt(0).lte(MAX_LEARNING_RATE),
    num_train_epochs: z.number().int().min(1).max(MAX_EPOCHS),
  }),
});

/** The self-edit's JSON exactly as the model writes it (after validation). */
export type SelfEditJson = z.infer<typeof selfEditSchema>;

/** A validated self-edit, in this codebase's terms. */
export interface SelfEditConfig {
  /** Augmentation families to use when building the TTT set (concat is never on). */
  augmentations: Required<Omit<AugmentationFamilies, 'concat'>>;
  /** Loss on every token of each training text, or only on the answer (§4.5). */
  lossOn: 'all' | 'output';
  learningRate: number;
  epochs: number;
}

export type SelfEditFailureStage = 'json' | 'schema' | 'budget';

export type SelfEditParse =
  | { ok: true; config: SelfEditConfig; json: SelfEditJson }
  | { ok: false; stage: SelfEditFailureStage; reason: string };

export function toConfig(j: SelfEditJson): SelfEditConfig {
  return {
    augmentations: {
      basic: j.data_generation.use_basic_augmentations,
      size: j.data_generation.use_size_augmentations,
      chain: j.data_generation.use_chain_augmentations,
      repeat: j.data_generation.use_repeat_augmentations,
    },
    lossOn: j.training.strategy === 'train_using_all_tokens' ? 'all' : 'output',
    learningRate: j.training.learning_rate,
    epochs: j.training.num_train_epochs,
  };
}

/** The configuration as the self-edit JSON the model writes (e.g. to build behaviour-cloning data). */
export function toSelfEditJson(c: SelfEditConfig): SelfEditJson {
  return {
    data_generation: {
      use_basic_augmentations: c.augmentations.basic,
      use_size_augmentations: c.augmentations.size,
      use_chain_augmentations: c.augmentations.chain,
      use_repeat_augmentations: c.augmentations.repeat,
    },
    training: {
      strategy: c.lossOn === 'all' ? 'train_using_all_tokens' : 'train_using_output_tokens',
      learning_rate: c.learningRate,
      num_train_epochs: c.epochs,
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Extraction

/** Completions longer than this are not searched (the reference samples at most 128 tokens). */
export const MAX_SELF_EDIT_CHARS = 65_536;
const MAX_CANDIDATES = 64;

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function tryParse(s: string): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(s) as unknown };
  } catch {
    return { ok: false };
  }
}

/** End index (inclusive) of the balanced `{…}` starting at `start`, skipping braces inside strings. */
function matchBrace(s: string, start: number): number {
  let depth = 0;
  for (let i = start; i < s.length; i++) {
    const ch = s[i];
    if (ch === '"') {
      i++;
      while (i < s.length && s[i] !== '"') i += s[i] === '\\' ? 2 : 1;
    } else if (ch === '{') {
      depth++;
    } else if (ch === '}') {
      depth--;
      if (depth === 0) return i;
    }
  }
  return -1;
}

type Extracted = { ok: true; value: unknown; where: string } | { ok: false; reason: string };

/**
 * Find the JSON object a completion carries: the whole text, else the body of a code fence, else
 * the first balanced `{…}` span that parses as an object. A `{` that is never closed ends the
 * search: everything after it is inside an unfinished object — a completion cut off by the token
 * limit, which the reference (`json.loads`) discards and resamples, so it must not be salvaged by
 * picking up a nested fragment such as the `data_generation` object.
 */
function extractJson(text: string, mode: 'lenient' | 'reference'): Extracted {
  const whole = tryParse(text);
  if (whole.ok && (mode === 'reference' || isPlainObject(whole.value))) return { ...whole, where: 'the completion' };
  if (mode === 'reference') return { ok: false, reason: 'the completion is not valid JSON' };

  const fence = /```[A-Za-z0-9_-]*[ \t]*\r?\n?([\s\S]*?)```/g;
  for (let m = fence.exec(text); m !== null; m = fence.exec(text)) {
    const body = tryParse((m[1] ?? '').trim());
    if (body.ok && isPlainObject(body.value)) return { ...body, where: 'a code fence' };
  }

  let tried = 0;
  let truncated = false;
  for (let i = text.indexOf('{'); i >= 0 && tried < MAX_CANDIDATES; i = text.indexOf('{', i + 1)) {
    tried++;
    const end = matchBrace(text, i);
    if (end < 0) {
      truncated = true;
      break;
    }
    const r = tryParse(text.slice(i, end + 1));
    if (r.ok && isPlainObject(r.value)) return { ...r, where: `the JSON object at character ${i}` };
  }
  if (whole.ok) return { ...whole, where: 'the completion' }; // valid JSON, not an object: the schema says what is wrong
  if (truncated) return { ok: false, reason: 'unterminated JSON object (the completion looks cut off)' };
  return { ok: false, reason: tried === 0 ? 'no JSON object in the completion' : 'no parseable JSON object in the completion' };
}

// ---------------------------------------------------------------------------------------------
// Validation

function at(value: unknown, path: readonly PropertyKey[]): unknown {
  let v = value;
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[p];
  }
  return v;
}

function show(v: unknown): string {
  if (v === undefined) return 'nothing';
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}

function schemaReason(value: unknown, error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return 'invalid self-edit';
  const path = issue.path.map(String).join('.');
  const where = path === '' ? 'self-edit' : path;
  if (issue.code === 'unrecognized_keys') {
    const keys = issue.keys.map((k) => `"${k}"`).join(', ');
    if (path === 'data_generation') {
      return `data_generation: unknown augmentation option ${keys} (known: ${AUGMENTATION_KEYS.join(', ')})`;
    }
    return `${where}: unknown key ${keys}`;
  }
  const got = at(value, issue.path);
  if (got === undefined && issue.path.length > 0) return `${where}: missing`;
  if (issue.path.length === 0 && !isPlainObject(value)) return `expected a JSON object, got ${show(value)}`;
  return `${where}: ${issue.message} (got ${show(got)})`;
}

export interface ParseSelfEditOptions {
  /** 'lenient' (default): find the object in prose/fences; 'reference': whole text must be JSON. */
  mode?: 'lenient' | 'reference';
}

/**
 * Parse a model completion into a self-edit configuration. Never throws: every failure is
 * `{ok: false, stage, reason}` (see the header for what each stage means to the caller).
 */
export function parseSelfEdit(text: unknown, options: ParseSelfEditOptions = {}): SelfEditParse {
  try {
    if (typeof text !== 'string') return { ok: false, stage: 'json', reason: `expected text, got ${typeof text}` };
    if (text.trim() === '') return { ok: false, stage: 'json', reason: 'empty completion' };
    if (text.length > MAX_SELF_EDIT_CHARS) {
      return { ok: false, stage: 'json', reason: `completion of ${text.length} characters exceeds ${MAX_SELF_EDIT_CHARS}` };
    }
    const found = extractJson(text, options.mode ?? 'lenient');
    if (!found.ok) return { ok: false, stage: 'json', reason: found.reason };
    const r = selfEditSchema.safeParse(found.value);
    if (!r.success) {
      const context = found.where === 'the completion' ? '' : ` (in ${found.where})`;
      return { ok: false, stage: 'schema', reason: schemaReason(found.value, r.error) + context };
    }
    return { ok: true, config: toConfig(r.data), json: r.data };
  } catch (e) {
    // Defensive: nothing above should throw, but a parser of model output must not crash the loop.
    return { ok: false, stage: 'json', reason: `unexpected error: ${(e as Error)?.message ?? String(e)}` };
  }
}

/**
 * The reference's cost cap (§4.3 rule 5): `epochs × datasetSize // 2 > 375` makes a self-edit
 * train for 0 epochs. `datasetSize` is the number of TTT examples after the token filter and the
 * 250 cap. Returns the step count the reference's check computes.
 */
export function checkStepBudget(
  config: Pick<SelfEditConfig, 'epochs'>,
  datasetSize: number,
): { ok: true; steps: number } | { ok: false; stage: 'budget'; steps: number; reason: string } {
  const steps = Math.floor((config.epochs * datasetSize) / TTT_BATCH_SIZE);
  if (steps > MAX_TTT_STEPS) {
    return {
      ok: false,
      stage: 'budget',
      steps,
      reason: `${config.epochs} epochs × ${datasetSize} examples / batch ${TTT_BATCH_SIZE} = ${steps} optimizer steps, more than ${MAX_TTT_STEPS}`,
    };
  }
  return { ok: true, steps };
}
