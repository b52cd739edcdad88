// Contexts the base model fails without adaptation.
//
// The reference's few-shot experiment (§4.1, §4.9) runs on task subsets "filtered for the 1B
// model": tasks its model does not solve in context (no adaptation scores 0 % there). On such
// contexts a reward of 1 means the self-edit's adaptation *made* the difference; on contexts the
// model already solves, a harmless do-nothing self-edit (a tiny learning rate, one epoch) earns the
// same reward as a helpful one, and ReST-EM learns to do nothing. This selects the first `count`
// candidates (in order, so the choice is deterministic) whose no-adaptation score is below
// `maxScore`.
import type { Model } from '../model/model.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import type { Domain, SealContext } from './domain.js';

export interface UnsolvedSelection<C extends SealContext> {
  contexts: C[];
  /** Candidates scored to find them. */
  examined: number;
  /** Candidates left out because the base model already solves them. */
  solved: number;
}

export async function unsolvedContexts<C extends SealContext>(
  model: Model,
  tok: TextTokenizer,
  domain: Domain<C>,
  candidates: readonly C[],
  count: number,
  options: { maxScore?: number; onProgress?: (found: number, examined: number) => void } = {},
): Promise<UnsolvedSelection<C>> {
  if (!Number.isInteger(count) || count < 0) throw new RangeError(`unsolvedContexts: count must be a non-negative integer, got ${count}`);
  const maxScore = options.maxScore ?? 1;
  const contexts: C[] = [];
  let examined = 0;
  for (const ctx of candidates) {
    if (contexts.length >= count) break;
    const [evaluation] = await domain.evaluate(model, tok, ctx, [-1]);
    examined += 1;
    if ((evaluation?.score ?? 0) < maxScore) contexts.push(ctx);
    options.onProgress?.(contexts.length, examined);
  }
  if (contexts.length < count) {
    throw new Error(`unsolvedContexts: only ${contexts.length} of ${candidates.length} candidate contexts score below ${maxScore} without adaptation; ${count} were asked for (give more candidates)`);
  }
  return { contexts, examined, solved: examined - contexts.length };
}
