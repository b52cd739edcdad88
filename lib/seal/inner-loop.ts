// The inner loop: apply self-edits (fresh LoRA adapters trained on each self-edit's data) and
// score each adapted model on its context's check. Several self-edits of one context run as ONE
// batched job: each gets an adapter slot, every optimiser step packs the current batch of every
// adapter still training (the engine trains each slot exactly as if it were alone), and one batched
// evaluation scores them all.
import type { Model, Sequence } from '../model/model.js';
import { learningRate } from '../model/schedule.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { Rng } from '../util/rng.js';
import type { Domain, Evaluation, InnerLoopConfig, SealContext, SelfEditTraining } from './domain.js';

export interface InnerJob<C extends SealContext = SealContext> {
  ctx: C;
  training: SelfEditTraining;
  /** Seeds the adapter's initialisation and the data order. */
  seed: number;
}

export interface InnerResult {
  /** Score of the adapted model; 0 for an invalid self-edit (not trained). */
  evaluation: Evaluation | null;
  valid: boolean;
  reason?: string;
  sequences: number;
  trainTokens: number;
  steps: number;
  finalLoss: number | null;
  trainSeconds: number;
  evalSeconds: number;
}

/** First adapter slot the inner loop uses; lower slots stay free for the caller (e.g. a policy). */
export const INNER_SLOT_BASE = 100;

// Adapters trained in one batched run share the optimiser's weight decay and clipping (learning
// rates and schedules are per adapter), so jobs are grouped by those two.
function optimiserKey(c: InnerLoopConfig): string {
  return `${c.weightDecay}|${c.maxGradNorm}`;
}

// Tokens per trainSteps call at most (a step larger than that goes alone): enough to batch a small
// model's steps (16 adapters x ~20 tokens: ~50 steps, ~1 s), while a large model's long steps gain
// nothing from sharing a call and keep their per-step granularity.
const STEP_CALL_TOKENS = 16_384;

function chunkSteps<S extends { sequences: { tokens: ArrayLike<number> }[] }>(steps: S[]): S[][] {
  const chunks: S[][] = [];
  let current: S[] = [];
  let tokens = 0;
  for (const step of steps) {
    const n = step.sequences.reduce((a, q) => a + q.tokens.length, 0);
    if (current.length > 0 && tokens + n > STEP_CALL_TOKENS) {
      chunks.push(current);
      current = [];
      tokens = 0;
    }
    current.push(step);
    tokens += n;
  }
  if (current.length > 0) chunks.push(current);
  return chunks;
}

/**
 * Runs inner-loop jobs (of any contexts). Up to `parallel` adapters train together in one batched
 * run, then each context's adapters are evaluated together; invalid self-edits get no adapter and
 * score null (reward 0). `onGroup` sees each finished group (the caller persists results there).
 */
export async function runInnerJobs<C extends SealContext>(
  model: Model, tok: TextTokenizer, domain: Domain<C>, jobs: InnerJob<C>[],
  options: { parallel?: number; onGroup?: (indices: number[], results: InnerResult[]) => Promise<void> | void } = {},
): Promise<InnerResult[]> {
  const results: InnerResult[] = jobs.map((j) => ({
    evaluation: null, valid: j.training.ok, ...(j.training.ok ? {} : { reason: j.training.reason }),
    sequences: j.training.ok ? j.training.examples.length : 0,
    trainTokens: j.training.ok ? j.training.examples.reduce((a, e) => a + e.tokens.length, 0) : 0,
    steps: 0, finalLoss: null, trainSeconds: 0, evalSeconds: 0,
  }));
  const byKey = new Map<string, { j: InnerJob<C>; i: number }[]>();
  jobs.forEach((j, i) => {
    if (!j.training.ok) return;
    const key = optimiserKey(j.training.config);
    byKey.set(key, [...(byKey.get(key) ?? []), { j, i }]);
  });
  const parallel = Math.max(1, options.parallel ?? 16);
  const groups: { j: InnerJob<C>; i: number }[][] = [];
  for (const list of byKey.values()) for (let g = 0; g < list.length; g += parallel) groups.push(list.slice(g, g + parallel));
  for (const group of groups) {
    const t0 = Date.now();
    // Per adapter: its batches for every epoch, in its own seeded order.
    const plans = group.map(({ j, i }, k) => {
      const tr = j.training as Extract<SelfEditTraining, { ok: true }>;
      const cfg = tr.config;
      const slot = INNER_SLOT_BASE + k;
      model.createAdapter(slot, { rank: cfg.rank, alpha: cfg.alpha, targets: cfg.targets, dropout: cfg.dropout, seed: j.seed });
      const rng = new Rng(j.seed);
      const batches: Sequence[][] = [];
      for (let e = 0; e < cfg.epochs; e++) {
        const order = rng.shuffle(tr.examples.map((_, x) => x));
        for (let b = 0; b < order.length; b += cfg.batchSize) {
          batches.push(order.slice(b, b + cfg.batchSize).map((x) => ({ tokens: tr.examples[x]!.tokens, trainMask: tr.examples[x]!.trainMask, slot })));
        }
      }
      return { i, ctx: j.ctx, slot, cfg, batches, losses: [] as number[] };
    });
    // Every step of the group is known before the first (batches, schedules), so they go to the
    // engine a chunk of steps per call (trainSteps; same bits as one call per step): a step here is
    // a millisecond or a few, and each call costs thread handoffs of its own.
    const maxSteps = Math.max(...plans.map((p) => p.batches.length));
    const steps = Array.from({ length: maxSteps }, (_, s) => {
      const active = plans.filter((p) => s < p.batches.length);
      const slotLr = new Map(active.map((p) => [p.slot, learningRate({ kind: p.cfg.schedule, lr: p.cfg.lr, total: p.batches.length }, s + 1)]));
      const first = active[0]!.cfg;
      return {
        active,
        sequences: active.flatMap((p) => p.batches[s]!),
        options: { mode: 'lora' as const, lr: first.lr, slotLr, maxGradNorm: first.maxGradNorm, weightDecay: first.weightDecay, seed: s },
      };
    });
    for (const chunk of chunkSteps(steps)) {
      const trained = await model.trainSteps(chunk);
      trained.forEach((r, s) => { for (const p of chunk[s]!.active) p.losses.push(r.loss.get(p.slot) ?? NaN); });
    }
    const trainSeconds = (Date.now() - t0) / 1000;
    const t1 = Date.now();
    const evals = new Map<number, Evaluation>();
    const byCtx = new Map<string, typeof plans>();
    for (const p of plans) byCtx.set(p.ctx.id, [...(byCtx.get(p.ctx.id) ?? []), p]);
    for (const list of byCtx.values()) {
      const scored = await domain.evaluate(model, tok, list[0]!.ctx, list.map((p) => p.slot));
      list.forEach((p, k) => { const e = scored[k]; if (e) evals.set(p.i, e); });
    }
    const evalSeconds = (Date.now() - t1) / 1000;
    plans.forEach((p) => {
      const res = results[p.i]!;
      res.evaluation = evals.get(p.i) ?? null;
      res.steps = p.batches.length;
      res.finalLoss = p.losses.at(-1) ?? null;
      res.trainSeconds = trainSeconds / plans.length;
      res.evalSeconds = evalSeconds / plans.length;
      model.dropAdapter(p.slot);
    });
    await options.onGroup?.(plans.map((p) => p.i), plans.map((p) => results[p.i]!));
  }
  return results;
}
