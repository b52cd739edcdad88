// The test-time-training set of one ARC (sub-)task, built from its demonstrations per a self-edit's
// augmentation choice (reference §4.4, `self-edit.py: process_task` / `get_test_time_train_data`),
// and the training text of each example with the spans that carry loss (§4.5).
//
// Only the demonstrations are used — the real test input never enters the TTT data. For each
// leave-n in {1, 2}:
//   1. base tasks: each demonstration i in turn is the pseudo-test pair, and every way of dropping
//      n−1 further demonstrations gives the remaining ones as demos (leave-1: N tasks of N−1 demos;
//      leave-2: N(N−1) tasks of N−2 demos — zero demos when N = 2);
//   2. every enabled augmenter applied to every base task (all grids, pseudo-test pair included);
//      results with any side above 30 are dropped;
//   3. union with the base tasks, de-duplicated;
//   4. for each task, if any augmenter is enabled, a random colour permutation (§augment
//      permuteColorsMap), then a random demo order; union with step 3, de-duplicated;
//   5. (optional) tasks whose rendered text has ≥ 8192 tokens are dropped.
// The leave-1 and leave-2 lists are concatenated; beyond 250 examples they are shuffled and cut.
//
// Deliberate differences from the reference, all about determinism (§7.5):
//   - de-duplication keeps first occurrences in construction order (base tasks first). The
//     reference goes through Python sets, whose order depends on per-process hash randomisation,
//     so its content and capped subset differ between runs even with fixed seeds;
//   - one caller-supplied PRNG `rng(): [0, 1)` drives everything, instead of a fresh
//     `RandomState(0)` per leave-n and another for the cap. Counts and structure follow the
//     reference; the exact random draws cannot (they would need NumPy's MT19937 streams *and*
//     CPython's set order).

import {
  augmentTask,
  getAugmenters,
  permuteColors,
  permuteExamples,
  type AugmentationFamilies,
} from './augment.js';
import {
  MAX_GRID_SIDE,
  dedupeBy,
  shuffleInPlace,
  taskKey,
  taskMaxSide,
  type ArcExample,
  type PseudoTask,
} from './grid.js';
import { llama3ChatRenderer, taskMessages, type ChatRenderer } from './grid-format.js';

/** The reference's fixed construction parameters (§4.3 "Fixed, not controllable", §4.4). */
export const TTT_DATA_DEFAULTS = {
  leaveN: [1, 2] as readonly number[],
  permuteN: 1,
  maxExamples: 250,
  maxTokens: 8192,
} as const;

/**
 * The reference's fixed TTT optimisation settings (§4.6), for the trainer that consumes this set.
 * Learning rate, epochs and the loss strategy come from the self-edit.
 */
export const TTT_TRAINING_REFERENCE = {
  lora: { rank: 128, alpha: 16, dropout: 0, targets: ['q_proj', 'v_proj', 'gate_proj', 'down_proj', 'up_proj'] },
  batchSize: 2,
  gradientAccumulation: 1,
  scheduler: 'cosine',
  warmupSteps: 11,
  optimizer: 'adamw',
} as const;

export interface TttBuildOptions {
  /** Uniform [0, 1) source; plug in the project-wide seeded PRNG. */
  rng: () => number;
  /** Leave-n values (default [1, 2]). */
  leaveN?: readonly number[];
  /** Colour/order-permuted copies per task (default 1). */
  permuteN?: number;
  /** Cap on the final set (default 250). */
  maxExamples?: number;
  /** Token count of a task's training text; when given, tasks with ≥ maxTokens tokens are dropped. */
  countTokens?: (task: PseudoTask) => number;
  /** Default 8192, as the reference. */
  maxTokens?: number;
}

export interface LeaveNStats {
  n: number;
  /** Step 1: base tasks. */
  base: number;
  /** Step 2: augmented tasks kept (≤ 30×30). */
  augmented: number;
  /** Step 2: augmented tasks dropped for exceeding 30 on a side. */
  oversize: number;
  /** Step 3: unique tasks after the union with the base tasks. */
  unique: number;
  /** Step 4: unique tasks after adding the permuted copies. */
  withPermutations: number;
  /** Step 5: after the token filter (equals withPermutations without a counter). */
  kept: number;
}

export interface TttSet {
  tasks: PseudoTask[];
  stats: { leaveN: LeaveNStats[]; beforeCap: number; final: number; augmenters: string[] };
}

/** Ascending k-combinations of `items`, in itertools.combinations order. */
function* combinations<T>(items: readonly T[], k: number, start = 0, prefix: T[] = []): Generator<T[]> {
  if (prefix.length === k) {
    yield prefix.slice();
    return;
  }
  for (let i = start; i <= items.length - (k - prefix.length); i++) {
    prefix.push(items[i]!);
    yield* combinations(items, k, i + 1, prefix);
    prefix.pop();
  }
}

/**
 * Step 1 — leave-n base tasks: demonstration i is the pseudo-test pair; for each (n−1)-subset of the
 * others that is also left out, the rest (in original order) are the demos.
 */
export function leaveNTasks(demos: readonly ArcExample[], n: number): PseudoTask[] {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`leave-n must be an integer ≥ 1, got ${n}`);
  const out: PseudoTask[] = [];
  for (let i = 0; i < demos.length; i++) {
    const others = demos.map((_, j) => j).filter((j) => j !== i);
    for (const dropped of combinations(others, n - 1)) {
      const keep = others.filter((j) => !dropped.includes(j));
      out.push({ train: keep.map((j) => demos[j]!), test: demos[i]! });
    }
  }
  return out;
}

/** Build the TTT task set for one (sub-)task's demonstrations. */
export function buildTttTasks(
  demos: readonly ArcExample[],
  families: AugmentationFamilies,
  options: TttBuildOptions,
): TttSet {
  const { rng } = options;
  const leaveN = options.leaveN ?? TTT_DATA_DEFAULTS.leaveN;
  const permuteN = options.permuteN ?? TTT_DATA_DEFAULTS.permuteN;
  const maxExamples = options.maxExamples ?? TTT_DATA_DEFAULTS.maxExamples;
  const maxTokens = options.maxTokens ?? TTT_DATA_DEFAULTS.maxTokens;

  const all: PseudoTask[] = [];
  const stats: LeaveNStats[] = [];
  let augmenterNames: string[] = [];
  for (const n of leaveN) {
    const base = leaveNTasks(demos, n);
    // A fresh augmenter list per construction, as the reference builds one per leave-n; only
    // RandomTranslateXY draws from the rng (its shared shift, see augment.ts).
    const augmenters = getAugmenters(families, rng);
    augmenterNames = augmenters.map((a) => a.name);

    const augmented: PseudoTask[] = [];
    let oversize = 0;
    for (const aug of augmenters) {
      for (const t of base) {
        const a = augmentTask(t, aug);
        if (taskMaxSide(a) <= MAX_GRID_SIDE) augmented.push(a);
        else oversize++;
      }
    }
    const unique = dedupeBy([...base, ...augmented], taskKey);

    const permuted: PseudoTask[] = [];
    for (let r = 0; r < permuteN; r++) {
      for (const t of unique) {
        const colored = augmenters.length > 0 ? permuteColors(t, rng).task : t;
        permuted.push(permuteExamples(colored, rng));
      }
    }
    const withPermutations = dedupeBy([...unique, ...permuted], taskKey);
    const kept = options.countTokens
      ? withPermutations.filter((t) => options.countTokens!(t) < maxTokens)
      : withPermutations;

    stats.push({
      n,
      base: base.length,
      augmented: augmented.length,
      oversize,
      unique: unique.length,
      withPermutations: withPermutations.length,
      kept: kept.length,
    });
    all.push(...kept);
  }

  const beforeCap = all.length;
  const tasks = all.length > maxExamples ? shuffleInPlace(all, rng).slice(0, maxExamples) : all;
  return { tasks, stats: { leaveN: stats, beforeCap, final: tasks.length, augmenters: augmenterNames } };
}

// ---------------------------------------------------------------------------------------------
// Training text and label masking (§4.5)

/** Loss on every token of the text, or only on the answer (self-edit strategy). */
export type LossOn = 'all' | 'output';

/** A piece of training text and whether its tokens carry loss. */
export interface TextSegment {
  text: string;
  train: boolean;
}

export interface TrainingText {
  /** The full text (concatenation of the segments). */
  text: string;
  segments: TextSegment[];
}

export interface TrainingTextOptions {
  /** Chat template renderer; default: the Llama-3.2 template with a pinned date. */
  render?: ChatRenderer;
  /**
   * Append the empty assistant header after the answer, as the reference does
   * (`add_generation_prompt=True` after the assistant turn, §4.5 / §7.11): it is then trained on.
   * Default true (reference behaviour); false drops that quirk.
   */
  trailingGenerationPrompt?: boolean;
}

/**
 * The training text of a TTT example and its loss spans.
 *
 * 'all' (`train_using_all_tokens`): one trained segment.
 * 'output' (`train_using_output_tokens`): the reference masks everything up to and including the
 * `\n\n` of the answer's assistant header; loss covers the answer grid, `#`, `<|eot_id|>` and the
 * trailing header. Here that boundary is found without token ids: the untrained prefix is the
 * prompt rendered with the generation header (system + user + assistant header), which a
 * well-behaved template renders as a prefix of the full text.
 *
 * Tokenisation concerns stay with the tokenizer: the reference's tokenizer adds a second BOS in front
 * of the template's, pads the batch to its longest example with EOS and does not mask the pads
 * (§4.5, §7.8) — decide those at the trainer.
 */
export function trainingText(task: PseudoTask, lossOn: LossOn, options: TrainingTextOptions = {}): TrainingText {
  if (task.test.output === undefined) throw new Error('a TTT example needs its pseudo-test output');
  const render = options.render ?? llama3ChatRenderer();
  const messages = taskMessages(task);
  const text = render(messages, { addGenerationPrompt: options.trailingGenerationPrompt ?? true });
  if (lossOn === 'all') return { text, segments: [{ text, train: true }] };
  const prompt = render(messages.slice(0, 2), { addGenerationPrompt: true });
  if (!text.startsWith(prompt)) {
    throw new Error('chat template does not render the generation prompt as a prefix of the full conversation; cannot locate the answer span');
  }
  return {
    text,
    segments: [
      { text: prompt, train: false },
      { text: text.slice(prompt.length), train: true },
    ],
  };
}
