// SEAL's single-passage evaluation set (seal-method.md §1.1, §1.8, Appendix A).
//
// The reference defines it implicitly: `random.seed(42); random.shuffle(records)` over all of
// squad_val.json, then `records[start : start+n]` with start 0 and n 200 (974 questions). Every
// reference eval file shares that order. Rather than emulate CPython's Mersenne-Twister shuffle,
// sealkit ships the resulting index list as data (eval-passages.json, copied from Appendix A;
// §7 item 6 asks for explicit id lists). Taking `count` passages means taking the first `count`
// of that order — what the reference does with `--n count` — so a smaller count is a prefix of
// the full set, in evaluation order.

import { z } from 'zod';
import evalPassagesJson from './eval-passages.json' with { type: 'json' };
import type { SquadPassage } from './squad-data.js';

const evalPassagesSchema = z.object({
  source: z.string(),
  sourcePassages: z.number().int().positive(),
  firstTitle: z.string(),
  questions: z.number().int().positive(),
  indices: z.array(z.number().int().nonnegative()).length(200),
});

const EVAL = evalPassagesSchema.parse(evalPassagesJson);

/** 0-based indices into squad_val.json of the 200 evaluation passages, in evaluation order. */
export const EVAL_PASSAGE_INDICES: readonly number[] = Object.freeze([...EVAL.indices]);

/** Size of the reference's evaluation set. */
export const EVAL_PASSAGE_COUNT = EVAL_PASSAGE_INDICES.length;

/** Number of questions over all 200 evaluation passages (§1.1). */
export const EVAL_QUESTION_COUNT = EVAL.questions;

/** Number of passages in squad_val.json, the file the indices point into. */
export const EVAL_SOURCE_PASSAGES = EVAL.sourcePassages;

export interface EvalSelectionOptions {
  /** How many passages, 1..200: the first `count` of the evaluation order. Default 200. */
  count?: number;
}

/**
 * Picks the reference's evaluation passages from the passages of squad_val.json (as loaded by
 * loadSquadFile: `passages[i].id === i`). The indices only mean something for that file, so a
 * different file (e.g. squad_train.json) is refused instead of silently yielding other passages.
 */
export function selectEvalPassages(passages: readonly SquadPassage[], options: EvalSelectionOptions = {}): SquadPassage[] {
  const count = options.count ?? EVAL_PASSAGE_COUNT;
  if (!Number.isInteger(count) || count < 1 || count > EVAL_PASSAGE_COUNT) {
    throw new RangeError(
      `evaluation selection: count must be an integer from 1 to ${EVAL_PASSAGE_COUNT} (the reference's evaluation set has ${EVAL_PASSAGE_COUNT} passages); got ${count}`,
    );
  }
  if (passages.length !== EVAL.sourcePassages) {
    throw new Error(
      `evaluation selection: the indices point into ${EVAL.source} (${EVAL.sourcePassages} passages); got ${passages.length} passages — is this a different file?`,
    );
  }
  const first = passages[EVAL_PASSAGE_INDICES[0]!];
  if (first?.title !== EVAL.firstTitle) {
    throw new Error(
      `evaluation selection: passage ${EVAL_PASSAGE_INDICES[0]} should be titled ${JSON.stringify(EVAL.firstTitle)} in ${EVAL.source}; got ${JSON.stringify(first?.title)} — is this a different file or order?`,
    );
  }
  return EVAL_PASSAGE_INDICES.slice(0, count).map((i) => {
    const p = passages[i]!;
    if (p.id !== i) throw new Error(`evaluation selection: passage at position ${i} has id ${p.id}; pass the file's passages in file order`);
    return p;
  });
}
