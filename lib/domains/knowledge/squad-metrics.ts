// SQuAD v1.1 answer metrics (the official `evaluate-v1.1.py`) and SEAL's accuracy aggregation.
//
// The reference grades with an LLM judge and has no EM/F1 anywhere (seal-method.md §1.6); sealkit
// offers EM/F1 as the cheap, deterministic, offline proxy that §7 item 3 asks for (the GPU
// machines cannot reach an API). To be a recognisable proxy it must be the official script's
// behaviour, not an approximation, so the Python semantics are reproduced exactly:
//   normalize_answer(s) = white_space_fix(remove_articles(remove_punc(lower(s))))
//   remove_punc   drops the 32 ASCII characters of `string.punctuation` only (not "–", "’" …)
//   remove_articles  re.sub(r'\b(a|an|the)\b', ' ', text) with Python's Unicode word boundary
//   white_space_fix  ' '.join(text.split())
//   f1: bag-of-tokens overlap (Counter intersection); 0 when nothing is shared — including when
//       both sides normalise to empty (v1.1; v2.0 changed that case to 1)
//   both metrics take the max over the gold answers.

import { PY_WORD_CHAR, pySplitWhitespace } from './py-text.js';

// Python's `string.punctuation`.
const ASCII_PUNCTUATION = new Set('!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~');
// `\b(a|an|the)\b` with Python 3's Unicode `\w` (JS `\b` is ASCII-only: it would wrongly strip
// "the" from "éthe").
const ARTICLES = new RegExp(`(?<!${PY_WORD_CHAR})(?:a|an|the)(?!${PY_WORD_CHAR})`, 'gu');

/** The official SQuAD v1.1 `normalize_answer`. */
export function normalizeAnswer(s: string): string {
  let text = s.toLowerCase();
  let kept = '';
  for (const ch of text) if (!ASCII_PUNCTUATION.has(ch)) kept += ch;
  text = kept.replace(ARTICLES, ' ');
  return pySplitWhitespace(text).join(' ');
}

function goldList(golds: string | readonly string[]): readonly string[] {
  const list = typeof golds === 'string' ? [golds] : golds;
  // The official script takes max() over the golds, which raises on an empty list.
  if (list.length === 0) throw new Error('SQuAD metric: no gold answers given (need at least one)');
  return list;
}

/** Official `exact_match_score` for one gold. */
function exactMatchOne(prediction: string, gold: string): boolean {
  return normalizeAnswer(prediction) === normalizeAnswer(gold);
}

/** Official `f1_score` for one gold. */
function f1One(prediction: string, gold: string): number {
  const predTokens = pySplitWhitespace(normalizeAnswer(prediction));
  const goldTokens = pySplitWhitespace(normalizeAnswer(gold));
  const goldCounts = new Map<string, number>();
  for (const t of goldTokens) goldCounts.set(t, (goldCounts.get(t) ?? 0) + 1);
  let same = 0;
  for (const t of predTokens) {
    const left = goldCounts.get(t) ?? 0;
    if (left > 0) {
      same += 1;
      goldCounts.set(t, left - 1);
    }
  }
  if (same === 0) return 0;
  const precision = same / predTokens.length;
  const recall = same / goldTokens.length;
  return (2 * precision * recall) / (precision + recall);
}

/** Exact match after normalisation, max over the gold answers (official v1.1). */
export function exactMatch(prediction: string, golds: string | readonly string[]): boolean {
  return goldList(golds).some((g) => exactMatchOne(prediction, g));
}

/** Token F1 after normalisation, max over the gold answers (official v1.1), in [0, 1]. */
export function f1Score(prediction: string, golds: string | readonly string[]): number {
  let best = 0;
  for (const g of goldList(golds)) best = Math.max(best, f1One(prediction, g));
  return best;
}

/** Accuracy of a set of graded questions, both ways the reference's numbers can be read. */
export interface AccuracySummary {
  /**
   * Mean over passages of the per-passage fraction correct — what SEAL reports (§1.8: "mean over
   * passages of per-passage accuracy (macro)").
   */
  macro: number;
  /** Correct / total questions (micro); differs from macro by up to ~1 point on SEAL's data (§7.13). */
  micro: number;
  passages: number;
  questions: number;
  correct: number;
}

/**
 * Aggregates per-question verdicts grouped by passage (`verdicts[p][q]`). A passage with no
 * graded question has no accuracy (the reference's mean would fail on it, §7.14), so it is an
 * error rather than a silent 0 or a silent skip.
 */
export function summarizeAccuracy(verdicts: readonly (readonly boolean[])[]): AccuracySummary {
  if (verdicts.length === 0) throw new Error('accuracy: no passages to aggregate');
  let macroSum = 0;
  let correct = 0;
  let questions = 0;
  verdicts.forEach((passage, p) => {
    if (passage.length === 0) throw new Error(`accuracy: passage ${p} has no graded questions`);
    let c = 0;
    for (const v of passage) if (v) c += 1;
    macroSum += c / passage.length;
    correct += c;
    questions += passage.length;
  });
  return { macro: macroSum / verdicts.length, micro: correct / questions, passages: verdicts.length, questions, correct };
}

/** SEAL's reported accuracy: mean over passages of per-passage accuracy (§1.8). */
export function passageMeanAccuracy(verdicts: readonly (readonly boolean[])[]): number {
  return summarizeAccuracy(verdicts).macro;
}

/** Per-question (micro) accuracy over all passages. */
export function questionAccuracy(verdicts: readonly (readonly boolean[])[]): number {
  return summarizeAccuracy(verdicts).micro;
}
