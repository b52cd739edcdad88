// From a self-edit completion to the inner loop's training sequences, exactly as the reference's
// `build_train_sequences` (seal-method.md §1.3, [repo: src/utils.py]).
//
// This decides what the LoRA is trained on, so it decides the reward: the reference's numbers
// (§1.8, and the sequence counts of §8: 8.6 per passage for base self-edits, ...) are only
// comparable when the same sequences come out. Every rule below is the reference's, including
// the odd ones; string handling follows Python `str` semantics (py-text.ts) because that is what
// the reference ran.

import type { PassageText } from './prompts.js';
import { PY_DIGIT, PY_SPACE, pyLstrip, pySplitlines, pyStrip } from './py-text.js';

export interface SplitOptions {
  /**
   * The reference's `split_newlines` flag. Default true: every single-passage evaluation, the
   * round-1 ranking and the continual experiment ran with it on (§1.3, §1.8, §3). It was off in
   * the round-2 ranking (§1.7) and in every CPT run (§2) — pass false to reproduce those. (The
   * Python function's own default is False; sealkit defaults to what the reported numbers used.)
   */
  splitNewlines?: boolean;
}

/** How a completion was split, for diagnostics and tests. */
export type SplitMode = 'segments' | 'lines' | 'self-qa';

export interface SplitResult {
  mode: SplitMode;
  /** The self-edit pieces, before the title prefix; the passage is not among them. */
  pieces: string[];
}

// §1.3 step 2, self-QA detection. Case-sensitive like the reference's `re.search` patterns;
// `\s`/`\d` are Python's Unicode classes.
const QUESTION_MARK = new RegExp(`Question${PY_SPACE}+${PY_DIGIT}+:`, 'u');
const ANSWER_MARK = new RegExp(`Answer${PY_SPACE}*:`, 'u');
// `re.split(r'\n(?=Question\s+\d+:)', ...)`: cut at the newline before each "Question N:".
const QUESTION_BOUNDARY = new RegExp(`\\n(?=Question${PY_SPACE}+${PY_DIGIT}+:)`, 'u');

/**
 * Splits a raw self-edit completion into training pieces (§1.3 steps 1–2).
 *
 * 1. Split on the literal `---`, strip each piece, drop empty ones; if nothing remains, the
 *    stripped whole completion is the single piece (possibly the empty string).
 * 2. With `splitNewlines` (default true):
 *    a. Self-QA: if the RAW completion contains both `Question\s+\d+:` and `Answer\s*:`, the
 *       step-1 pieces are discarded; the stripped completion is cut before every newline that is
 *       followed by `Question <digits>:` (the newline itself is consumed; pieces are otherwise
 *       NOT stripped, so a blank line between pairs stays as a trailing "\n" of the piece). If
 *       the first piece does not start (after lstrip) with "Question", it becomes
 *       `"Question 1: " + piece.strip()` — this restores the prefix the self-qa prompt ended
 *       with (prompts.ts).
 *    b. Otherwise every non-blank line (Python `splitlines()`) of every piece becomes its own
 *       piece, stripped. Then, if there are at least 2 pieces and the SECOND starts with "1.",
 *       the first is dropped (it is a preamble such as "Sure, here are the implications:"; the
 *       paper states this rule for GPT-4.1 data, the code applies it to every self-edit).
 * Without `splitNewlines`, the step-1 pieces are used as they are (no preamble rule).
 */
export function splitSelfEdit(completion: string, options: SplitOptions = {}): SplitResult {
  const splitNewlines = options.splitNewlines ?? true;

  // Step 1.
  const stripped = pyStrip(completion);
  let pieces = completion
    .split('---')
    .map(pyStrip)
    .filter((p) => p !== '');
  if (pieces.length === 0) pieces = [stripped];
  if (!splitNewlines) return { mode: 'segments', pieces };

  // Step 2a — tested on the raw completion, as in the reference.
  if (QUESTION_MARK.test(completion) && ANSWER_MARK.test(completion)) {
    const qa = stripped.split(QUESTION_BOUNDARY);
    const first = qa[0] ?? '';
    if (!pyLstrip(first).startsWith('Question')) qa[0] = `Question 1: ${pyStrip(first)}`;
    return { mode: 'self-qa', pieces: qa };
  }

  // Step 2b.
  const lines: string[] = [];
  for (const piece of pieces) {
    for (const line of pySplitlines(piece)) {
      const s = pyStrip(line);
      if (s !== '') lines.push(s);
    }
  }
  if (lines.length >= 2 && lines[1]!.startsWith('1.')) lines.shift();
  return { mode: 'lines', pieces: lines };
}

/** `TRAINING_SEQUENCE_TEMPLATE` of the reference: `"{title}\n{text}"` (§1.3). */
export function trainingSequence(title: string, text: string): string {
  return `${title}\n${text}`;
}

/**
 * The reference's `build_train_sequences` (§1.3): the self-edit pieces of `splitSelfEdit`, each
 * as `"{title}\n{piece}"`, then — always — the passage itself as the last sequence,
 * `"{title}\n{context.strip()}"` (step 3).
 *
 * Consequences (§1.3): an empty completion yields exactly one sequence (the passage) with
 * `splitNewlines`, and two (a title-only `"{title}\n"` and the passage) without it. Duplicate
 * pieces are kept and there is no cap on the number of sequences (up to 57 seen in the
 * reference's eval data, §1.3).
 */
export function buildTrainSequences(
  completion: string,
  passage: PassageText,
  options: SplitOptions = {},
): string[] {
  const { pieces } = splitSelfEdit(completion, options);
  const sequences = pieces.map((p) => trainingSequence(passage.title, p));
  sequences.push(trainingSequence(passage.title, pyStrip(passage.context)));
  return sequences;
}
