// Inference queries for one ARC (sub-)task (reference §4.7 steps 1–3, marc
// `inference/preprocess.py: get_leave_n_test_task`, called by SEAL with include_n=[1], permute_n=2).
//
//   1. Leave-n views: for every n-subset of demonstrations left out, a task with the remaining demos
//      and the real test input, plus `permuteN` random re-orderings of its demos; de-duplicated.
//   2. For each of Transpose, Flip(0), Flip(1), Rotate(90), Rotate(180): pick a random view from
//      step 1, transform every grid, skip it if it equals an existing view, remember the augmenter
//      (the vote applies its inverse to the prediction).
//   3. Optionally drop views whose prompt has ≥ 8192 tokens; if none remain, retry with one more
//      leave-n value (include_n + [last + 1]).
// Query counts per sub-task with N demonstrations (§4.7): 7 (N=2), 10 (N=3), 16 (N=4), 20 (N=5) —
// upper bounds N + N·permuteN + 5 minus coincident orderings.

import {
  augmentTask,
  choice,
  flipAugmenter,
  permuteExamples,
  rotateAugmenter,
  transposeAugmenter,
  type Augmenter,
} from './augment.js';
import { dedupeBy, taskKey, type ArcExample, type Grid, type PseudoTask } from './grid.js';

export interface InferenceQuery {
  /** Demonstrations and the (possibly transformed) test input; no test output. */
  task: PseudoTask;
  /** The transform applied to the view, or null for an untransformed view. */
  augmenter: Augmenter | null;
}

export interface QueryOptions {
  /** Uniform [0, 1) source; plug in the project-wide seeded PRNG. */
  rng: () => number;
  /** Leave-n values (SEAL: [1]). */
  includeN?: readonly number[];
  /** Demo re-orderings per view (default 2). */
  permuteN?: number;
  /** Token count of a query's prompt; when given, queries with ≥ maxTokens tokens are dropped. */
  countTokens?: (task: PseudoTask) => number;
  maxTokens?: number;
}

/** The reference's test-time transforms, in its order. */
export function inferenceAugmenters(): Augmenter[] {
  return [transposeAugmenter(), flipAugmenter(0), flipAugmenter(1), rotateAugmenter(90), rotateAugmenter(180)];
}

function* subsets(n: number, k: number, start = 0, prefix: number[] = []): Generator<number[]> {
  if (prefix.length === k) {
    yield prefix.slice();
    return;
  }
  for (let i = start; i <= n - (k - prefix.length); i++) {
    prefix.push(i);
    yield* subsets(n, k, i + 1, prefix);
    prefix.pop();
  }
}

/** Steps 1–2 for one leave-n value. */
export function leaveNQueries(
  demos: readonly ArcExample[],
  testInput: Grid,
  n: number,
  rng: () => number,
  permuteN = 2,
): InferenceQuery[] {
  const views: PseudoTask[] = [];
  for (const left of subsets(demos.length, n)) {
    const task: PseudoTask = { train: demos.filter((_, j) => !left.includes(j)), test: { input: testInput } };
    views.push(task);
    for (let r = 0; r < permuteN; r++) views.push(permuteExamples(task, rng));
  }
  const unique = dedupeBy(views, taskKey);
  const seen = new Set(unique.map(taskKey));
  const transformed: InferenceQuery[] = [];
  if (unique.length > 0) {
    for (const aug of inferenceAugmenters()) {
      const t = augmentTask(choice(unique, rng), aug);
      // The reference compares with the untransformed views only.
      if (seen.has(taskKey(t))) continue;
      transformed.push({ task: t, augmenter: aug });
    }
  }
  return dedupeBy([...transformed, ...unique.map((task) => ({ task, augmenter: null }))], (q) => taskKey(q.task));
}

/** All inference queries for a sub-task (steps 1–3). */
export function buildInferenceQueries(demos: readonly ArcExample[], testInput: Grid, options: QueryOptions): InferenceQuery[] {
  const includeN = options.includeN ?? [1];
  const permuteN = options.permuteN ?? 2;
  const maxTokens = options.maxTokens ?? 8192;
  const build = (ns: readonly number[]) => {
    const qs = ns.flatMap((n) => (n <= demos.length ? leaveNQueries(demos, testInput, n, options.rng, permuteN) : []));
    return options.countTokens ? qs.filter((q) => options.countTokens!(q.task) < maxTokens) : qs;
  };
  let queries = build(includeN);
  const last = includeN[includeN.length - 1];
  if (queries.length === 0 && options.countTokens && last !== undefined) queries = build([...includeN, last + 1]);
  return queries;
}
