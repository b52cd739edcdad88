// The few-shot abstract-reasoning domain (ARC, reference §4) as a SEAL Domain.
//
// Context = one ARC task: its demonstrations and every test pair (the reference's sub-tasks
// `<id>-<i>` share the demonstrations, so they share the self-edit prompt, the TTT set and hence the
// adapter; evaluating them together under one adapter is the reference's computation without the
// duplicate training).
//
//   selfEditPrompt  the reference's prompt (§4.2): demonstrations as digit rows + the configuration
//                   instruction, wrapped in Llama-3 chat markup by hand when the tokenizer knows that
//                   markup, otherwise by the tokenizer's chat template
//   buildTraining   parse the model's JSON configuration (§4.3; invalid or unparsable → {ok: false},
//                   which the loop records in the ledger with reward 0), build the TTT set from the
//                   demonstrations (§4.4: leave-1/leave-2 tasks + the chosen augmentation families +
//                   colour/order permutations, token filter, cap), render each example (§4.5) with
//                   loss on all tokens or on the answer only, and take lr/epochs from the
//                   configuration; the reference's cost cap (§4.3 rule 5) makes over-budget
//                   configurations invalid
//   baselineTraining  the reference's fixed TTT configuration (`ttt.py`, §4.10): all four families,
//                   loss on outputs, lr 1e-4, 2 epochs (no cost cap, as in ttt.py)
//   evaluate        the reference's inference (§4.7): leave-one-out views with demo permutations and
//                   five transformed views per test input, greedy answers, parse, inverse transform,
//                   vote (2 attempts); a task scores 1 only when every test input is solved (§4.7
//                   "Scoring", §4.8 reward)
//
// A completion that is not a parseable configuration is recorded as an invalid self-edit with
// reward 0 (the reference resamples until it gets a parseable one, without a cap: §4.3, §7.12).
//
// Deliberate differences, all documented options:
//   - one BOS everywhere (the reference trains with two and infers with one, §7.11);
//   - the training text ends after the answer turn by default (the reference also trains on a
//     dangling assistant header, §4.5/§7.11: `trailingGenerationPrompt: true` restores it);
//   - the chat template's date is pinned (§7.5);
//   - every random choice (TTT construction, query views) is seeded from (seed, task id), so all
//     conditions see the same views and a resumed run rebuilds the same data;
//   - the inner loop's cosine schedule has no warmup (the reference: 11 warmup steps).
import type { Model } from '../../model/model.js';
import type { TextTokenizer } from '../../model/tokenizer.js';
import type { Domain, Evaluation, InnerLoopConfig, QuestionResult, SealContext, SelfEditTraining } from '../../seal/domain.js';
import type { SftExample } from '../../model/sft.js';
import { Rng, rngU32 } from '../../util/rng.js';
import type { AugmentationFamilies } from './augment.js';
import type { ArcTask } from './data.js';
import type { ArcExample, PseudoTask } from './grid.js';
import { exampleAnswerText, gridToText, llama3ChatRenderer, OUTPUT_TERMINATOR, queryPrompt, type ChatRenderer } from './grid-format.js';
import { buildInferenceQueries, type InferenceQuery } from './queries.js';
import {
  parseSelfEdit, SELF_EDIT_SAMPLING, SELF_EDIT_SYSTEM_MESSAGE, selfEditPrompt, selfEditUserMessage, type SelfEditConfig,
} from './self-edit-config.js';
import { buildTttTasks, TTT_DATA_DEFAULTS, trainingText, type LossOn } from './ttt-data.js';
import { isSolved, predictionFromText, vote } from './voting.js';

/** One ARC task as a SEAL context. */
export interface ArcContext extends SealContext {
  /** The task id. */
  id: string;
  /** Demonstrations (the only data TTT and the self-edit prompt see). */
  train: ArcExample[];
  /** Test pairs (inputs with their solutions). */
  test: ArcExample[];
}

export function arcContexts(tasks: readonly ArcTask[]): ArcContext[] {
  return tasks.map((t) => ({ id: t.id, train: t.train, test: t.test }));
}

/** The reference's TTT optimisation (§4.6): LoRA r 128, α 16 on q/v/gate/down/up, batch 2, cosine. lr/epochs come from the self-edit. */
export const REFERENCE_ARC_INNER_LOOP: InnerLoopConfig = {
  rank: 128, alpha: 16, targets: ['q_proj', 'v_proj', 'gate_proj', 'down_proj', 'up_proj'], dropout: 0,
  lr: 1e-4, epochs: 2, batchSize: 2, schedule: 'cosine', maxGradNorm: 1, weightDecay: 0,
};

/** The reference's fixed TTT configuration (`ttt.py`, §4.10). */
export const REFERENCE_FIXED_TTT: SelfEditConfig = {
  augmentations: { basic: true, size: true, chain: true, repeat: true },
  lossOn: 'output',
  learningRate: 1e-4,
  epochs: 2,
};

export interface ArcTttOptions {
  /** Leave-n values (default [1, 2]). */
  leaveN?: readonly number[];
  /** Colour/order-permuted copies per task (default 1). */
  permuteN?: number;
  /** Cap on the TTT set (default 250). */
  maxExamples?: number;
  /** Examples with this many tokens or more are dropped (default 8192). */
  maxTokens?: number;
  /** The cost cap: more than this many optimiser steps (epochs × examples // batch) makes a self-edit invalid (default 375). */
  maxSteps?: number;
}

export interface ArcQueryOptions {
  /** Leave-n values of the inference views (default [1]). */
  includeN?: readonly number[];
  /** Demo re-orderings per view (default 2). */
  permuteN?: number;
  /** Views with this many prompt tokens or more are dropped (default 8192). */
  maxTokens?: number;
}

export interface ArcDomainOptions {
  /** LoRA shape and optimiser of the TTT inner loop (lr/epochs here are only the defaults' placeholders). */
  inner?: Partial<InnerLoopConfig>;
  /** The fixed-configuration TTT baseline (default: the reference's ttt.py configuration). */
  fixed?: SelfEditConfig;
  ttt?: ArcTttOptions;
  queries?: ArcQueryOptions;
  /** Seeds TTT construction and query views (with the task id). Default 0. */
  seed?: number;
  /** Longest self-edit sampled in tokens (default 128, the reference). */
  selfEditMaxTokens?: number;
  /** Cap on generated answer tokens (default 2048; the per-task limit is twice its largest grid). */
  answerMaxTokens?: number;
  /** 'lenient' (default): find the JSON object in prose or fences; 'reference': the whole completion must be JSON. */
  parseMode?: 'lenient' | 'reference';
  /** Train on the dangling assistant header after the answer, as the reference does (default false). */
  trailingGenerationPrompt?: boolean;
  /** The chat template's "Today Date" (default 26 Jul 2024). */
  dateString?: string;
  /** Prompts per batched generation call (default 64). */
  evalBatch?: number;
}

/** The configuration a valid self-edit trains with (recorded in the ledger's `config`). */
export interface ArcInnerConfig extends InnerLoopConfig {
  augmentations: SelfEditConfig['augmentations'];
  lossOn: LossOn;
  examples: number;
  steps: number;
}

/** A derived seed from a base seed and string/number parts (53-bit safe). */
export function arcSeed(seed: number, ...parts: (string | number)[]): number {
  let h = seed;
  for (const p of parts) {
    const v = typeof p === 'number' ? p : [...p].reduce((a, ch) => (Math.imul(a, 31) + ch.charCodeAt(0)) >>> 0, 7);
    h = rngU32(h, v) * 2048 + (rngU32(h ^ 0x2545f491, v) >>> 21);
  }
  return h;
}

function familiesKey(f: AugmentationFamilies): string {
  return `${f.basic ? 1 : 0}${f.size ? 1 : 0}${f.chain ? 1 : 0}${f.repeat ? 1 : 0}`;
}

/** The chat renderer for a tokenizer: its own template (date pinned), else the Llama-3 template as code. */
export function arcChatRenderer(tok: TextTokenizer, dateString = '26 Jul 2024'): ChatRenderer {
  if (!tok.hasChatTemplate) return llama3ChatRenderer({ dateString });
  return (messages, { addGenerationPrompt }) => tok.applyChatTemplate(messages.map((m) => ({ role: m.role, content: m.content })), { addGenerationPrompt, extra: { date_string: dateString } });
}

/** Encodes rendered chat text with exactly one BOS (the template's, or the tokenizer's when the text has none). */
export function encodeRendered(tok: TextTokenizer, text: string): number[] {
  const bos = tok.bosToken;
  return tok.encode(text, { addSpecialTokens: !(bos !== undefined && bos !== '' && text.startsWith(bos)) });
}

/** The self-edit prompt tokens (§4.2) for a tokenizer. */
export function arcSelfEditPromptTokens(tok: TextTokenizer, demos: readonly ArcExample[]): number[] {
  if (tok.tokenToId('<|start_header_id|>') !== undefined && tok.tokenToId('<|end_header_id|>') !== undefined) {
    // The reference's hand-wrapped Llama-3 markup; the tokenizer adds the (single) BOS.
    return tok.encode(selfEditPrompt(demos, { bos: false }));
  }
  const messages = [{ role: 'system', content: SELF_EDIT_SYSTEM_MESSAGE }, { role: 'user', content: selfEditUserMessage(demos) }];
  if (tok.hasChatTemplate) return encodeRendered(tok, tok.applyChatTemplate(messages, { addGenerationPrompt: true }));
  return tok.encode(`${SELF_EDIT_SYSTEM_MESSAGE}\n\n${selfEditUserMessage(demos)}\n`);
}

interface TttCacheEntry {
  tasks: PseudoTask[];
  /** Per lossOn: the tokenised examples. */
  examples: Map<LossOn, SftExample[]>;
}

export function arcDomain(options: ArcDomainOptions = {}): Domain<ArcContext> {
  const inner: InnerLoopConfig = { ...REFERENCE_ARC_INNER_LOOP, ...options.inner };
  const fixed = options.fixed ?? REFERENCE_FIXED_TTT;
  const seed = options.seed ?? 0;
  const maxSteps = options.ttt?.maxSteps ?? 375;
  const maxTttTokens = options.ttt?.maxTokens ?? TTT_DATA_DEFAULTS.maxTokens;
  const maxQueryTokens = options.queries?.maxTokens ?? 8192;
  const trailing = options.trailingGenerationPrompt ?? false;
  const evalBatch = Math.max(1, options.evalBatch ?? 64);
  const answerCap = options.answerMaxTokens ?? 2048;

  // Per tokenizer: the renderer and a text → tokens cache (the same texts recur across self-edits).
  const perTok = new WeakMap<TextTokenizer, { render: ChatRenderer; tokens: Map<string, number[]> }>();
  const tokState = (tok: TextTokenizer) => {
    let s = perTok.get(tok);
    if (!s) {
      s = { render: arcChatRenderer(tok, options.dateString), tokens: new Map() };
      perTok.set(tok, s);
    }
    return s;
  };
  const encodeCached = (tok: TextTokenizer, text: string): number[] => {
    const s = tokState(tok);
    let ids = s.tokens.get(text);
    if (!ids) {
      ids = encodeRendered(tok, text);
      if (s.tokens.size > 50_000) s.tokens.clear();
      s.tokens.set(text, ids);
    }
    return ids;
  };

  // Token count for a length filter: a text of B UTF-8 bytes has at most B (+ added specials) tokens
  // with any byte-level or byte-fallback tokenizer, so a short text needs no tokenizing.
  const countBelow = (tok: TextTokenizer, text: string, limit: number): number => {
    const bound = Buffer.byteLength(text, 'utf8') + 4;
    return bound < limit ? bound : encodeCached(tok, text).length;
  };

  // Per context and augmentation choice: the TTT set (it depends on nothing else).
  const tttCache = new WeakMap<ArcContext, Map<string, TttCacheEntry>>();
  const tttSet = (ctx: ArcContext, families: SelfEditConfig['augmentations'], tok: TextTokenizer): TttCacheEntry => {
    let byFamilies = tttCache.get(ctx);
    if (!byFamilies) tttCache.set(ctx, (byFamilies = new Map()));
    const key = familiesKey(families);
    let entry = byFamilies.get(key);
    if (!entry) {
      const { render } = tokState(tok);
      const rng = new Rng(arcSeed(seed, 'ttt', ctx.id, key));
      const set = buildTttTasks(ctx.train, families, {
        rng: () => rng.uniform(),
        ...(options.ttt?.leaveN ? { leaveN: options.ttt.leaveN } : {}),
        ...(options.ttt?.permuteN !== undefined ? { permuteN: options.ttt.permuteN } : {}),
        ...(options.ttt?.maxExamples !== undefined ? { maxExamples: options.ttt.maxExamples } : {}),
        maxTokens: maxTttTokens,
        countTokens: (t) => countBelow(tok, trainingText(t, 'all', { render, trailingGenerationPrompt: trailing }).text, maxTttTokens),
      });
      entry = { tasks: set.tasks, examples: new Map() };
      byFamilies.set(key, entry);
    }
    return entry;
  };
  const tttExamples = (ctx: ArcContext, config: SelfEditConfig, tok: TextTokenizer): SftExample[] => {
    const entry = tttSet(ctx, config.augmentations, tok);
    let ex = entry.examples.get(config.lossOn);
    if (!ex) {
      const { render } = tokState(tok);
      ex = entry.tasks.map((t) => {
        const tt = trainingText(t, config.lossOn, { render, trailingGenerationPrompt: trailing });
        const tokens = encodeCached(tok, tt.text);
        if (config.lossOn === 'all') return { tokens, trainMask: tokens.map((_, i) => (i === 0 ? 0 : 1)) };
        // The answer starts where the prompt (system + user + assistant header) ends; tokenising the
        // prompt alone normally gives a prefix of the full tokens (else: their common prefix).
        const prompt = encodeCached(tok, tt.segments[0]!.text);
        let p = 0;
        while (p < prompt.length && p < tokens.length && prompt[p] === tokens[p]) p++;
        return { tokens, trainMask: tokens.map((_, i) => (i >= p ? 1 : 0)) };
      }).filter((e) => e.tokens.length >= 2 && e.trainMask.some((m, i) => i > 0 && m > 0));
      entry.examples.set(config.lossOn, ex);
    }
    return ex;
  };

  const training = (ctx: ArcContext, config: SelfEditConfig, tok: TextTokenizer, budget: boolean): SelfEditTraining => {
    let examples: SftExample[];
    try {
      examples = tttExamples(ctx, config, tok);
    } catch (e) {
      return { ok: false, reason: `ttt: cannot build the training set: ${(e as Error).message}` };
    }
    if (examples.length === 0) return { ok: false, reason: 'ttt: the configuration yields no training example' };
    const steps = Math.floor((config.epochs * examples.length) / inner.batchSize);
    if (budget && steps > maxSteps) {
      return {
        ok: false,
        reason: `budget: ${config.epochs} epochs × ${examples.length} examples / batch ${inner.batchSize} = ${steps} optimizer steps, more than ${maxSteps}`,
      };
    }
    const cfg: ArcInnerConfig = {
      ...inner, lr: config.learningRate, epochs: config.epochs,
      augmentations: { ...config.augmentations }, lossOn: config.lossOn, examples: examples.length, steps,
    };
    return { ok: true, examples, config: cfg };
  };

  // Inference views per (context, test index): seeded by the task, so every condition sees the same.
  const queryCache = new WeakMap<ArcContext, Map<number, InferenceQuery[]>>();
  const queriesFor = (ctx: ArcContext, i: number, tok: TextTokenizer): InferenceQuery[] => {
    let m = queryCache.get(ctx);
    if (!m) queryCache.set(ctx, (m = new Map()));
    let qs = m.get(i);
    if (!qs) {
      const { render } = tokState(tok);
      const rng = new Rng(arcSeed(seed, 'queries', ctx.id, i));
      qs = buildInferenceQueries(ctx.train, ctx.test[i]!.input, {
        rng: () => rng.uniform(),
        ...(options.queries?.includeN ? { includeN: options.queries.includeN } : {}),
        ...(options.queries?.permuteN !== undefined ? { permuteN: options.queries.permuteN } : {}),
        maxTokens: maxQueryTokens,
        countTokens: (t) => countBelow(tok, queryPrompt(t, render), maxQueryTokens),
      });
      m.set(i, qs);
    }
    return qs;
  };
  const answerLimit = (ctx: ArcContext, tok: TextTokenizer): number => {
    let most = 1;
    for (const g of [...ctx.train.flatMap((e) => [e.input, e.output]), ...ctx.test.map((e) => e.input)]) {
      most = Math.max(most, tok.encode(exampleAnswerText(g), { addSpecialTokens: false }).length);
    }
    return Math.max(8, Math.min(answerCap, 2 * most + 8));
  };

  return {
    name: 'arc',
    innerDefaults: inner,
    selfEditMaxTokens: options.selfEditMaxTokens ?? SELF_EDIT_SAMPLING.maxTokens,
    selfEditStop: [],
    selfEditPrompt: (ctx, tok) => arcSelfEditPromptTokens(tok, ctx.train),
    buildTraining(ctx, selfEdit, tok): SelfEditTraining {
      const parsed = parseSelfEdit(selfEdit, { mode: options.parseMode ?? 'lenient' });
      if (!parsed.ok) return { ok: false, reason: `${parsed.stage}: ${parsed.reason}` };
      return training(ctx, parsed.config, tok, true);
    },
    baselineTraining: (ctx, tok) => training(ctx, fixed, tok, false),
    // One unit per task: an invalid self-edit is a failed task, not a task left out.
    checkSize: () => 1,
    async evaluate(model: Model, tok: TextTokenizer, ctx: ArcContext, slots: number[]): Promise<Evaluation[]> {
      const { render } = tokState(tok);
      const eos = tok.eosTokenIds.length ? tok.eosTokenIds : model.config.eosTokenIds;
      // Every (slot, test input, view) is one greedy generation; all of them in a few batched calls.
      const jobs: { s: number; i: number; q: InferenceQuery; tokens: number[] }[] = [];
      slots.forEach((_, s) => ctx.test.forEach((_t, i) => {
        for (const q of queriesFor(ctx, i, tok)) jobs.push({ s, i, q, tokens: encodeCached(tok, queryPrompt(q.task, render)) });
      }));
      const texts: string[] = new Array<string>(jobs.length).fill('');
      const maxNewTokens = answerLimit(ctx, tok);
      for (let b = 0; b < jobs.length; b += evalBatch) {
        const part = jobs.slice(b, b + evalBatch);
        const out = await model.generate(part.map((j) => ({ tokens: j.tokens, slot: slots[j.s]! })), {
          maxNewTokens, temperature: 0, eosTokenIds: eos, tokenizer: tok, stop: [OUTPUT_TERMINATOR],
        });
        for (const c of out) texts[b + c.prompt] = c.text ?? '';
      }
      return slots.map((_, s) => {
        const items: QuestionResult[] = ctx.test.map((t, i) => {
          const preds = jobs.flatMap((j, k) => (j.s === s && j.i === i ? [predictionFromText(texts[k]!, j.q.augmenter)] : []));
          const { attempts } = vote(preds);
          const correct = isSolved(attempts, t.output);
          return {
            question: ctx.test.length > 1 ? `${ctx.id}-${i}` : ctx.id,
            gold: gridToText(t.output),
            prediction: attempts.length ? attempts.map(gridToText).join(' | ') : '(no valid prediction)',
            correct,
          };
        });
        // Task-level (§4.7): solved only when every test input is; one unit per task.
        const solved = items.every((it) => it.correct) ? 1 : 0;
        return { score: solved, correct: solved, total: 1, items };
      });
    },
  };
}

