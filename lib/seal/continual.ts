// Continual self-edits (the reference's forgetting experiment, §3): a sequence of contexts is
// learned one after another; at each step the current model writes a self-edit for the next
// context, a LoRA is trained on it, the model is evaluated on every context seen so far (one row of
// a lower-triangular accuracy matrix), and the LoRA is merged into the weights before the next
// step. Several sequences give mean and standard-deviation matrices.
import { Model } from '../model/model.js';
import { trainAdapter } from '../model/sft.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { Rng } from '../util/rng.js';
import type { Domain, SealContext } from './domain.js';

export interface ContinualOptions<C extends SealContext> {
  modelDir: string;
  tokenizer: TextTokenizer;
  domain: Domain<C>;
  pool: C[];
  /** Contexts per sequence (the reference: 8). */
  steps: number;
  /** Independent sequences (the reference: 8 runs x 8 sequences). */
  sequences: number;
  sampling: { temperature: number; topP: number };
  seed: number;
  onProgress?: (stage: string, done: number, total: number) => void;
}

export interface ContinualResult {
  /** mean[r][c]: accuracy on context c after r edits (row 0 = before any edit; c <= max(r-1, ...)). */
  mean: (number | null)[][];
  std: (number | null)[][];
  sequences: { contexts: string[]; matrix: (number | null)[][] }[];
  /** Mean accuracy on the first context right after its edit and after all edits. */
  forgetting: { firstAfterOwnEdit: number; firstAfterAll: number; rowZeroMean: number; lastRowMean: number };
}

const SLOT = 0;

export async function runContinual<C extends SealContext>(o: ContinualOptions<C>): Promise<ContinualResult> {
  const K = o.steps;
  const runs: ContinualResult['sequences'] = [];
  for (let s = 0; s < o.sequences; s++) {
    const rng = new Rng(o.seed * 7919 + s);
    const contexts = rng.shuffle([...o.pool]).slice(0, K);
    if (contexts.length < K) throw new Error(`continual: the pool has ${o.pool.length} contexts, fewer than ${K} steps`);
    const model = await Model.load(o.modelDir);
    try {
      const matrix: (number | null)[][] = Array.from({ length: K + 1 }, () => Array<number | null>(K).fill(null));
      for (const [c, ctx] of contexts.entries()) matrix[0]![c] = (await o.domain.evaluate(model, o.tokenizer, ctx, [-1]))[0]!.score;
      for (let k = 0; k < K; k++) {
        o.onProgress?.(`sequence ${s + 1}/${o.sequences}`, k, K);
        const ctx = contexts[k]!;
        const [gen] = await model.generate([{ tokens: o.domain.selfEditPrompt(ctx, o.tokenizer), seed: o.seed * 104729 + s * 131 + k }], {
          maxNewTokens: o.domain.selfEditMaxTokens, temperature: o.sampling.temperature, topP: o.sampling.topP, tokenizer: o.tokenizer,
        });
        const text = (gen?.text ?? '').trim();
        // An empty self-edit falls back to the context's baseline data (the reference: the passage).
        const t = text === '' ? o.domain.baselineTraining(ctx, o.tokenizer) : o.domain.buildTraining(ctx, text, o.tokenizer);
        const training = t.ok ? t : o.domain.baselineTraining(ctx, o.tokenizer);
        if (training.ok) {
          const cfg = training.config;
          model.createAdapter(SLOT, { rank: cfg.rank, alpha: cfg.alpha, targets: cfg.targets, dropout: cfg.dropout, seed: o.seed + k });
          await trainAdapter(model, SLOT, training.examples, { epochs: cfg.epochs, batchSize: cfg.batchSize, lr: cfg.lr, schedule: cfg.schedule, maxGradNorm: cfg.maxGradNorm, weightDecay: cfg.weightDecay, seed: o.seed + k });
          await model.mergeAdapter(SLOT);
        }
        for (let c = 0; c <= k; c++) matrix[k + 1]![c] = (await o.domain.evaluate(model, o.tokenizer, contexts[c]!, [-1]))[0]!.score;
      }
      runs.push({ contexts: contexts.map((c) => c.id), matrix });
    } finally {
      await model.dispose();
    }
  }
  const cell = (r: number, c: number) => runs.map((x) => x.matrix[r]![c]).filter((v): v is number => v !== null);
  const mean = Array.from({ length: K + 1 }, (_, r) => Array.from({ length: K }, (_, c) => {
    const v = cell(r, c);
    return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
  }));
  const std = Array.from({ length: K + 1 }, (_, r) => Array.from({ length: K }, (_, c) => {
    const v = cell(r, c);
    if (!v.length) return null;
    const m = v.reduce((a, b) => a + b, 0) / v.length;
    return Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / v.length);
  }));
  const avg = (xs: (number | null)[]) => { const v = xs.filter((x): x is number => x !== null); return v.length ? v.reduce((a, b) => a + b, 0) / v.length : 0; };
  return {
    mean, std, sequences: runs,
    forgetting: { firstAfterOwnEdit: mean[1]![0] ?? 0, firstAfterAll: mean[K]![0] ?? 0, rowZeroMean: avg(mean[0]!), lastRowMean: avg(mean[K]!) },
  };
}
