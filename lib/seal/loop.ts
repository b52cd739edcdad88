// The SEAL outer loop (ReST-EM), domain-agnostic. For each round: sample training contexts, let the
// policy write K self-edits per context, apply each (inner loop, R repeats) for its reward, keep
// the best self-edit per context (or those beating the no-adaptation score by a margin), fine-tune
// the policy on prompt -> kept self-edit (completion-only loss) and merge that LoRA into the
// weights, so the next round's policy and learner are the same network (as in the reference).
// Merging rather than keeping a policy adapter keeps inner-loop adapters on top of a plain model
// and makes every round's checkpoint a standard HF directory.
//
// Everything goes through the ledger: a resumed run replays finished work from it and the result
// equals an uninterrupted run with the same seed.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import { Model } from '../model/model.js';
import { savePeftAdapter } from '../model/peft.js';
import { trainAdapter, type SftExample } from '../model/sft.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { rngU32, Rng } from '../util/rng.js';
import type { Domain, SealContext, SelfEditTraining } from './domain.js';
import { runInnerJobs, type InnerResult } from './inner-loop.js';
import { Ledger, type InnerEntry, type Phase, type SelfEditsEntry } from './ledger.js';
import { formatTable, summarize, type RunSummary } from './summary.js';

export interface SealConfig {
  seed: number;
  /** ReST-EM rounds. */
  rounds: number;
  /** Training contexts sampled per round. */
  contextsPerRound: number;
  /** Self-edits sampled per context (K). */
  samples: number;
  /**
   * Self-edits sampled per held-out context in the self-edit conditions (default 1), each trained
   * and scored on its own; accuracies are then over (context, self-edit) pairs, the reference's ARC
   * metric (5 per task, §4.8).
   */
  evalSamples?: number;
  /** Inner-loop repeats per self-edit (R); the reward is their mean score. */
  repeats: number;
  /** best-of-k: keep each context's best self-edit (the reference); threshold: keep every self-edit whose reward beats no adaptation by `margin`; min-reward: keep every self-edit whose reward is at least `min`. */
  filter: { kind: 'best-of-k' } | { kind: 'threshold'; margin: number } | { kind: 'min-reward'; min: number };
  /** Sampling of self-edits (the reference: temperature 1, top-p 0.95). */
  sampling: { temperature: number; topP: number };
  /** Policy update (ReST-EM M-step): LoRA SFT then merge. */
  policy: { rank: number; alpha: number; lr: number; epochs: number; batchSize: number };
  /** Adapters trained together in one batched inner-loop run. */
  parallel: number;
  /** Which policies are scored on the held-out contexts: after every round (default) or only the last. */
  evalRounds?: 'all' | 'last';
  /** Evaluation conditions to run on the held-out contexts before RL. */
  baselines: { noAdaptation: boolean; baselineTraining: boolean; baseSelfEdits: boolean };
  /** Names of the conditions (tables, summary.json); `round` contains {r} for the round number. */
  names: { noAdaptation: string; baselineTraining: string; baseSelfEdits: string; round: string };
}

export type SealProgress = { stage: string; done: number; total: number; detail?: string };

export interface SealRunOptions<C extends SealContext> {
  runDir: string;
  modelDir: string;
  tokenizer: TextTokenizer;
  domain: Domain<C>;
  trainContexts: C[];
  evalContexts: C[];
  config: SealConfig;
  onProgress?: (p: SealProgress) => void;
}

export interface SealRunResult {
  summary: RunSummary;
  table: string;
  runDir: string;
}

/** A derived seed: the same (seed, parts) always gives the same number (53-bit safe). */
function derive(seed: number, ...parts: (number | string)[]): number {
  let h = seed;
  for (const p of parts) {
    const v = typeof p === 'number' ? p : [...p].reduce((a, ch) => (Math.imul(a, 31) + ch.charCodeAt(0)) >>> 0, 7);
    h = rngU32(h, v) * 2048 + (rngU32(h ^ 0x5bd1e995, v) >>> 21);
  }
  return h;
}

function writeJsonAtomic(path: string, value: unknown): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`);
  renameSync(tmp, path);
}

export async function runSeal<C extends SealContext>(o: SealRunOptions<C>): Promise<SealRunResult> {
  const { config: cfg, domain, tokenizer: tok } = o;
  mkdirSync(o.runDir, { recursive: true });
  const runConfig = { ...cfg, domain: domain.name, model: resolve(o.modelDir), trainContexts: o.trainContexts.length, evalContexts: o.evalContexts.length };
  const ledger = Ledger.open(join(o.runDir, 'ledger.jsonl'));
  // Resuming with other settings would mix two experiments in one ledger: refuse, and say what differs.
  const configPath = join(o.runDir, 'config.json');
  if (ledger.all().length > 0 && existsSync(configPath)) {
    const before = JSON.parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>;
    const now = JSON.parse(JSON.stringify(runConfig)) as Record<string, unknown>;
    const differ = [...new Set([...Object.keys(before), ...Object.keys(now)])].filter((k) => JSON.stringify(before[k]) !== JSON.stringify(now[k]));
    if (differ.length > 0) {
      ledger.close();
      const show = (v: unknown): string => (v === undefined ? 'absent' : JSON.stringify(v));
      throw new Error(`${o.runDir} was started with a different configuration (${differ.map((k) => `${k}: ${show(before[k])} then, ${show(now[k])} now`).join('; ')}); resume with the same options, or start a new run directory`);
    }
  }
  writeJsonAtomic(configPath, runConfig);
  // Structured log of the run (JSON lines): stages, policy updates, the result. The ledger holds the
  // results themselves; this says what happened when.
  const log = pino({ base: { run: o.runDir } }, pino.destination({ dest: join(o.runDir, 'log.jsonl'), sync: true, append: true }));
  log.info({ resumedEntries: ledger.all().length, config: cfg, domain: domain.name }, 'run start');
  let lastStage = '';
  const progress = (p: SealProgress) => {
    if (p.stage !== lastStage) {
      lastStage = p.stage;
      log.info({ stage: p.stage, total: p.total, done: p.done }, 'stage');
    }
    o.onProgress?.(p);
  };
  let model = await Model.load(o.modelDir);
  const eos = tok.eosTokenIds.length ? tok.eosTokenIds : model.config.eosTokenIds;
  const order: string[] = [];

  try {
    // ---- self-edits: from the ledger, or sampled now (all contexts of a call in one batch) ----
    const selfEdits = async (phase: Phase, condition: string, round: number, contexts: C[], k: number): Promise<Map<string, string[]>> => {
      const out = new Map<string, string[]>();
      const missing = contexts.filter((c) => {
        const e = ledger.get<SelfEditsEntry>(`self-edits|${phase}|${condition}|${round}|${c.id}`);
        if (e) out.set(c.id, e.texts);
        return !e;
      });
      const chunk = 32;
      for (let i = 0; i < missing.length; i += chunk) {
        const part = missing.slice(i, i + chunk);
        progress({ stage: `${condition}: writing self-edits`, done: contexts.length - missing.length + i, total: contexts.length });
        const t0 = Date.now();
        // A seed per context: its samples do not depend on which contexts share the batch (so a
        // resumed run that regenerates only the missing contexts draws the same self-edits).
        const prompts = part.map((c) => ({ tokens: domain.selfEditPrompt(c, tok), seed: derive(cfg.seed, 'self-edits', phase, condition, round, c.id) }));
        const gen = await model.generate(prompts, {
          n: k, maxNewTokens: domain.selfEditMaxTokens, temperature: cfg.sampling.temperature, topP: cfg.sampling.topP,
          eosTokenIds: eos, tokenizer: tok,
          ...(domain.selfEditStop.length ? { stop: domain.selfEditStop } : {}),
        });
        const seconds = (Date.now() - t0) / 1000;
        part.forEach((c, p) => {
          const texts = gen.filter((g) => g.prompt === p).map((g) => (g.text ?? '').trim());
          ledger.append({ type: 'self-edits', phase, condition, round, context: c.id, texts, seconds: seconds / part.length });
          out.set(c.id, texts);
        });
      }
      return out;
    };

    // ---- inner-loop runs for (context, sample, repeat) keys not yet in the ledger ----
    interface Pending { ctx: C; sample: number; repeat: number; selfEdit: string | null; training: SelfEditTraining; seed: number }
    const applyAll = async (phase: Phase, condition: string, round: number, pending: Pending[]): Promise<InnerEntry[]> => {
      const key = (p: Pending) => `inner|${phase}|${condition}|${round}|${p.ctx.id}|${p.sample}|${p.repeat}`;
      const todo = pending.filter((p) => !ledger.has(key(p)));
      let done = pending.length - todo.length;
      progress({ stage: `${condition}: inner loop`, done, total: pending.length });
      const record = (p: Pending, r: InnerResult) => {
        const ev = r.evaluation;
        ledger.append({
          type: 'inner', phase, condition, round, context: p.ctx.id, sample: p.sample, repeat: p.repeat, seed: p.seed,
          selfEdit: p.selfEdit, valid: r.valid, ...(r.reason ? { reason: r.reason } : {}),
          ...(p.training.ok ? { config: { ...p.training.config } } : {}),
          score: ev?.score ?? 0, correct: ev?.correct ?? 0, total: ev?.total ?? (r.valid ? 0 : domain.checkSize?.(p.ctx) ?? 0), ...(ev ? { items: ev.items } : {}),
          sequences: r.sequences, trainTokens: r.trainTokens, steps: r.steps, finalLoss: r.finalLoss,
          seconds: { train: r.trainSeconds, eval: r.evalSeconds },
        });
      };
      // No-adaptation evaluations have nothing to train: score the base model directly.
      const plain = todo.filter((p) => p.selfEdit === null && !p.training.ok);
      for (const p of plain) {
        const t0 = Date.now();
        const [ev] = await domain.evaluate(model, tok, p.ctx, [-1]);
        record(p, { evaluation: ev ?? null, valid: true, sequences: 0, trainTokens: 0, steps: 0, finalLoss: null, trainSeconds: 0, evalSeconds: (Date.now() - t0) / 1000 });
        progress({ stage: `${condition}: evaluating`, done: ++done, total: pending.length });
      }
      const rest = todo.filter((p) => !plain.includes(p));
      for (const p of rest.filter((x) => !x.training.ok)) {
        record(p, { evaluation: null, valid: false, reason: (p.training as { reason: string }).reason, sequences: 0, trainTokens: 0, steps: 0, finalLoss: null, trainSeconds: 0, evalSeconds: 0 });
        done++;
      }
      const trainable = rest.filter((x) => x.training.ok);
      await runInnerJobs(model, tok, domain, trainable.map((p) => ({ ctx: p.ctx, training: p.training, seed: p.seed })), {
        parallel: cfg.parallel,
        onGroup: (indices, results) => {
          indices.forEach((i, k) => record(trainable[i]!, results[k]!));
          done += indices.length;
          progress({ stage: `${condition}: inner loop`, done, total: pending.length });
        },
      });
      return pending.map((p) => ledger.get<InnerEntry>(key(p))!);
    };

    // ---- one evaluation condition on the held-out contexts ----
    const evaluateCondition = async (condition: string, round: number, mode: 'none' | 'baseline' | 'self-edit') => {
      order.push(condition);
      const ctxs = o.evalContexts;
      let texts = new Map<string, string[]>();
      const k = cfg.evalSamples ?? 1;
      if (mode === 'self-edit') texts = await selfEdits('eval', condition, round, ctxs, k);
      const pending: Pending[] = ctxs.flatMap((ctx): Pending[] => {
        const seed = derive(cfg.seed, 'eval', condition, ctx.id);
        if (mode === 'none') return [{ ctx, sample: 0, repeat: 0, selfEdit: null, training: { ok: false, reason: 'no adaptation' }, seed }];
        if (mode === 'baseline') return [{ ctx, sample: 0, repeat: 0, selfEdit: null, training: domain.baselineTraining(ctx, tok), seed }];
        // Sample 0 keeps the single-sample seed, so evalSamples = 1 runs are unchanged.
        return Array.from({ length: k }, (_, sample) => {
          const text = texts.get(ctx.id)?.[sample] ?? '';
          return { ctx, sample, repeat: 0, selfEdit: text, training: domain.buildTraining(ctx, text, tok), seed: sample === 0 ? seed : derive(seed, sample) };
        });
      });
      await applyAll('eval', condition, round, pending);
    };

    // ---- baselines before any RL ----
    if (cfg.baselines.noAdaptation) await evaluateCondition(cfg.names.noAdaptation, 0, 'none');
    if (cfg.baselines.baselineTraining) await evaluateCondition(cfg.names.baselineTraining, 0, 'baseline');
    if (cfg.baselines.baseSelfEdits) await evaluateCondition(cfg.names.baseSelfEdits, 0, 'self-edit');

    // ---- ReST-EM rounds ----
    for (let round = 1; round <= cfg.rounds; round++) {
      const checkpoint = join(o.runDir, 'policy', `round-${round}`);
      const policyEntry = ledger.get(`policy|${round}`);
      if (policyEntry && existsSync(join(checkpoint, 'model.safetensors'))) {
        await model.dispose();
        model = await Model.load(checkpoint);
      } else {
        const condition = `rl round ${round}`;
        const rng = new Rng(derive(cfg.seed, 'contexts', round));
        const contexts = rng.shuffle([...o.trainContexts]).slice(0, Math.min(cfg.contextsPerRound, o.trainContexts.length));
        const texts = await selfEdits('train', condition, round, contexts, cfg.samples);
        const pending: Pending[] = [];
        for (const ctx of contexts) {
          const list = texts.get(ctx.id) ?? [];
          list.forEach((text, sample) => {
            const training = domain.buildTraining(ctx, text, tok);
            for (let repeat = 0; repeat < cfg.repeats; repeat++) {
              pending.push({ ctx, sample, repeat, selfEdit: text, training, seed: derive(cfg.seed, 'train', round, ctx.id, sample, repeat) });
            }
          });
          if (cfg.filter.kind === 'threshold') {
            pending.push({ ctx, sample: -1, repeat: 0, selfEdit: null, training: { ok: false, reason: 'no adaptation' }, seed: 0 });
          }
        }
        const results = await applyAll('train', condition, round, pending);
        // E-step: mean reward per self-edit over its repeats; keep per the filter.
        const kept: { ctx: C; sample: number; text: string; reward: number }[] = [];
        for (const ctx of contexts) {
          const list = texts.get(ctx.id) ?? [];
          const rewards = list.map((_, sample) => {
            const rs = results.filter((r) => r.context === ctx.id && r.sample === sample);
            return rs.reduce((a, r) => a + r.score, 0) / Math.max(1, rs.length);
          });
          if (cfg.filter.kind === 'best-of-k') {
            let best = -1;
            rewards.forEach((r, i) => { if (best < 0 || r > rewards[best]!) best = i; });  // ties: the earlier sample
            if (best >= 0 && list[best]!.trim() !== '') kept.push({ ctx, sample: best, text: list[best]!, reward: rewards[best]! });
          } else if (cfg.filter.kind === 'min-reward') {
            // Every self-edit whose reward reaches `min` (the reference's ARC rule: reward 1, §4.8).
            const min = cfg.filter.min;
            rewards.forEach((r, i) => { if (r >= min && list[i]!.trim() !== '') kept.push({ ctx, sample: i, text: list[i]!, reward: r }); });
          } else {
            const base = results.find((r) => r.context === ctx.id && r.sample === -1)?.score ?? 0;
            const margin = cfg.filter.margin;
            rewards.forEach((r, i) => { if (r > base + margin && list[i]!.trim() !== '') kept.push({ ctx, sample: i, text: list[i]!, reward: r }); });
          }
        }
        // M-step: SFT the policy on prompt -> kept self-edit, completion-only loss, then merge.
        progress({ stage: `round ${round}: policy update`, done: 0, total: 1, detail: `${kept.length} self-edits kept` });
        const t0 = Date.now();
        const examples: SftExample[] = kept.map((k) => {
          const prompt = domain.selfEditPrompt(k.ctx, tok);
          const completion = [...tok.encode(k.text, { addSpecialTokens: false }), ...(eos[0] !== undefined ? [eos[0]] : [])];
          const tokens = [...prompt, ...completion];
          return { tokens, trainMask: tokens.map((_, i) => (i >= prompt.length ? 1 : 0)) };
        });
        let losses: number[] = [];
        const policySlot = 0;
        if (examples.length > 0) {
          model.createAdapter(policySlot, { rank: cfg.policy.rank, alpha: cfg.policy.alpha, seed: derive(cfg.seed, 'policy', round) });
          losses = await trainAdapter(model, policySlot, examples, {
            epochs: cfg.policy.epochs, batchSize: cfg.policy.batchSize, lr: cfg.policy.lr, schedule: 'linear', seed: derive(cfg.seed, 'policy-data', round),
          });
          await savePeftAdapter(model, policySlot, join(o.runDir, 'policy', `round-${round}-adapter`), { baseModel: round === 1 ? o.modelDir : join(o.runDir, 'policy', `round-${round - 1}`) });
          await model.mergeAdapter(policySlot);
        }
        const tmp = `${checkpoint}.tmp`;
        rmSync(tmp, { recursive: true, force: true });
        await model.save(tmp);
        rmSync(checkpoint, { recursive: true, force: true });
        renameSync(tmp, checkpoint);
        ledger.append({
          type: 'policy', round, kept: kept.map((k) => ({ context: k.ctx.id, sample: k.sample, reward: k.reward })),
          steps: losses.length, firstLoss: losses[0] ?? null, finalLoss: losses.at(-1) ?? null, checkpoint: join('policy', `round-${round}`),
          seconds: (Date.now() - t0) / 1000,
        });
        log.info({ round, kept: kept.length, steps: losses.length, finalLoss: losses.at(-1) ?? null, checkpoint }, 'policy updated');
        // Continue from the saved checkpoint so a resumed run and this one hold identical weights.
        await model.dispose();
        model = await Model.load(checkpoint);
      }
      if ((cfg.evalRounds ?? 'all') === 'all' || round === cfg.rounds) await evaluateCondition(cfg.names.round.replace('{r}', String(round)), round, 'self-edit');
    }

    const summary = summarize(ledger.all(), order);
    writeJsonAtomic(join(o.runDir, 'summary.json'), summary);
    log.info({ conditions: summary.conditions.map((c) => ({ name: c.name, accuracy: c.accuracy, questions: c.questions })) }, 'run finished');
    return { summary, table: formatTable(summary), runDir: o.runDir };
  } catch (err) {
    log.error({ err }, 'run failed');
    throw err;
  } finally {
    ledger.close();
    await model.dispose();
  }
}
