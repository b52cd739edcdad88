// Continued pretraining on many contexts at once (the reference's multi-passage "n = 200"
// experiment, §2): the self-edits of every context become one training corpus, ONE LoRA adapter
// is trained on it, and that adapter (and the un-adapted model) answers the questions of all the
// contexts.
import type { Model } from '../model/model.js';
import { trainAdapter, type SftExample } from '../model/sft.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import type { Domain, Evaluation, InnerLoopConfig, SealContext } from './domain.js';

export interface CptOptions<C extends SealContext> {
  model: Model;
  tokenizer: TextTokenizer;
  domain: Domain<C>;
  contexts: C[];
  /** Self-edits per context (0 = train on each context's baseline data, e.g. the passage). */
  samples: number;
  sampling: { temperature: number; topP: number };
  inner: InnerLoopConfig;
  seed: number;
  onProgress?: (stage: string, done: number, total: number) => void;
}

export interface CptResult {
  sequences: number;
  steps: number;
  finalLoss: number | null;
  baseline: { correct: number; total: number; accuracy: number };
  adapted: { correct: number; total: number; accuracy: number };
  perContext: { context: string; baseline: number; adapted: number }[];
}

const SLOT = 0;

export async function runCpt<C extends SealContext>(o: CptOptions<C>): Promise<CptResult> {
  const { model, tokenizer: tok, domain } = o;
  const examples: SftExample[] = [];
  if (o.samples > 0) {
    o.onProgress?.('writing self-edits', 0, o.contexts.length);
    const gen = await model.generate(o.contexts.map((c, i) => ({ tokens: domain.selfEditPrompt(c, tok), seed: o.seed * 1_000_003 + i })), {
      n: o.samples, maxNewTokens: domain.selfEditMaxTokens, temperature: o.sampling.temperature, topP: o.sampling.topP, tokenizer: tok,
      ...(domain.selfEditStop.length ? { stop: domain.selfEditStop } : {}),
    });
    for (const g of gen) {
      const t = domain.buildTraining(o.contexts[g.prompt]!, (g.text ?? '').trim(), tok);
      if (t.ok) examples.push(...t.examples);
    }
  } else {
    for (const c of o.contexts) {
      const t = domain.baselineTraining(c, tok);
      if (t.ok) examples.push(...t.examples);
    }
  }
  if (examples.length === 0) throw new Error('cpt: no training sequences');
  model.createAdapter(SLOT, { rank: o.inner.rank, alpha: o.inner.alpha, targets: o.inner.targets, dropout: o.inner.dropout, seed: o.seed });
  const total = Math.ceil(examples.length / o.inner.batchSize) * o.inner.epochs;
  const losses = await trainAdapter(model, SLOT, examples, {
    epochs: o.inner.epochs, batchSize: o.inner.batchSize, lr: o.inner.lr, schedule: o.inner.schedule, maxGradNorm: o.inner.maxGradNorm,
    weightDecay: o.inner.weightDecay, seed: o.seed, onStep: (s) => o.onProgress?.('training one adapter on all contexts', s.step, total),
  });
  const perContext: CptResult['perContext'] = [];
  const sum = { b: 0, a: 0, t: 0 };
  for (const [i, c] of o.contexts.entries()) {
    o.onProgress?.('evaluating', i, o.contexts.length);
    const [base, adapted] = (await domain.evaluate(model, tok, c, [-1, SLOT])) as [Evaluation, Evaluation];
    perContext.push({ context: c.id, baseline: base.score, adapted: adapted.score });
    sum.b += base.correct;
    sum.a += adapted.correct;
    sum.t += base.total;
  }
  model.dropAdapter(SLOT);
  return {
    sequences: examples.length, steps: losses.length, finalLoss: losses.at(-1) ?? null,
    baseline: { correct: sum.b, total: sum.t, accuracy: sum.t ? sum.b / sum.t : 0 },
    adapted: { correct: sum.a, total: sum.t, accuracy: sum.t ? sum.a / sum.t : 0 },
    perContext,
  };
}
