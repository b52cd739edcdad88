// The toy world as a SEAL domain (lib/seal/domain.ts): a context is one passage with its questions;
// the policy writes notes about the passage (the self-edit), each note line and the passage become
// one training sequence of the inner-loop LoRA fine-tune, and the adapted model answers the
// passage's questions closed-book ("Q: … A:"), graded by normalised exact match.
import type { TextTokenizer } from '../../model/tokenizer.js';
import type { Model } from '../../model/model.js';
import type { SftExample } from '../../model/sft.js';
import type { Domain, Evaluation, InnerLoopConfig, QuestionResult, SealContext, SelfEditTraining } from '../../seal/domain.js';
import { classifySelfEdit, passageBlock, questionPrompt, selfEditPromptText, type StyleAnalysis } from './styles.js';
import { makeWorld, WORLD_PRESETS, type Passage, type Split } from './world.js';

export interface ToyContext extends SealContext {
  passage: Passage;
  gender: 'm' | 'f';
}

export interface ToyworldDomainOptions {
  /** Overrides of the inner-loop defaults. */
  inner?: Partial<InnerLoopConfig>;
  /** Note lines used per self-edit (the rest is ignored). */
  maxLines?: number;
  /** Tokens kept per note line. */
  maxLineTokens?: number;
  /** Longest self-edit sampled, in tokens. */
  selfEditMaxTokens?: number;
  /** Longest answer generated, in tokens. */
  answerTokens?: number;
}

/**
 * Inner-loop defaults, chosen with scripts/toyworld-styles.ts on held-out passages: oracle
 * question-answer notes and restatements must clearly beat fine-tuning on the passage alone while
 * the un-adapted model stays near chance (see models/toyworld/README.md for the numbers).
 */
export const TOYWORLD_INNER_DEFAULTS: InnerLoopConfig = {
  rank: 16,
  alpha: 32,
  targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
  dropout: 0,
  lr: 1e-3,
  epochs: 10,
  batchSize: 1,
  schedule: 'linear',
  maxGradNorm: 1,
  weightDecay: 0,
};

/** Lower case, no surrounding punctuation, single spaces. */
export function normaliseAnswer(s: string): string {
  return s.toLowerCase().replace(/[^a-z0-9 ]+/g, ' ').replace(/\s+/g, ' ').trim();
}

/** The contexts of a split's preset world (one passage per person), optionally the first `count`. */
export function toyworldContexts(split: Exclude<Split, 'pretrain'>, count?: number): ToyContext[] {
  const preset = WORLD_PRESETS[split];
  const world = makeWorld(preset.seed, { entities: preset.entities, split });
  const contexts = world.passages.map((p) => ({ id: p.id, passage: p, gender: world.byName.get(p.subject)!.gender }));
  return count === undefined ? contexts : contexts.slice(0, count);
}

/** The style of a self-edit for a context (for reports: what does the policy write?). */
export function describeSelfEdit(ctx: ToyContext, selfEdit: string): StyleAnalysis {
  return classifySelfEdit(selfEdit, ctx.passage);
}

export function toyworldDomain(options: ToyworldDomainOptions = {}): Domain<ToyContext> {
  const innerDefaults: InnerLoopConfig = { ...TOYWORLD_INNER_DEFAULTS, ...options.inner };
  const maxLines = options.maxLines ?? 32;
  const maxLineTokens = options.maxLineTokens ?? 96;
  const answerTokens = options.answerTokens ?? 8;

  const sequence = (text: string, tok: TextTokenizer, limit: number): SftExample => {
    const eos = tok.eosTokenIds[0];
    const ids = tok.encode(text).slice(0, limit);
    if (eos !== undefined) ids.push(eos);
    return { tokens: ids, trainMask: ids.map((_, i) => (i === 0 ? 0 : 1)) };
  };
  const passageExample = (ctx: ToyContext, tok: TextTokenizer): SftExample => sequence(passageBlock(ctx.passage.text), tok, 4 * maxLineTokens);

  return {
    name: 'toyworld',
    innerDefaults,
    selfEditMaxTokens: options.selfEditMaxTokens ?? 160,
    selfEditStop: [],
    selfEditPrompt: (ctx, tok) => tok.encode(selfEditPromptText(ctx.passage.text)),
    buildTraining(ctx, selfEdit, tok): SelfEditTraining {
      const lines = selfEdit.split('\n').map((l) => l.trim()).filter((l) => l.length > 0).slice(0, maxLines);
      const examples = lines.map((l) => sequence(l, tok, maxLineTokens));
      // As in the reference (build_train_sequences): the passage itself is always trained on too.
      examples.push(passageExample(ctx, tok));
      return { ok: true, examples, config: { ...innerDefaults } };
    },
    baselineTraining(ctx, tok): SelfEditTraining {
      return { ok: true, examples: [passageExample(ctx, tok)], config: { ...innerDefaults } };
    },
    async evaluate(model: Model, tok: TextTokenizer, ctx: ToyContext, slots: number[]): Promise<Evaluation[]> {
      const qs = ctx.passage.questions;
      const prompts = slots.flatMap((slot) => qs.map((q) => ({ tokens: tok.encode(questionPrompt(q.question)), slot })));
      const out = await model.generate(prompts, {
        maxNewTokens: answerTokens, temperature: 0, stop: ['\n'], eosTokenIds: tok.eosTokenIds, tokenizer: tok,
      });
      const texts = new Map(out.map((c) => [c.prompt, c.text ?? '']));
      return slots.map((_, s) => {
        const items: QuestionResult[] = qs.map((q, k) => {
          const prediction = (texts.get(s * qs.length + k) ?? '').trim();
          return { question: q.question, gold: q.answer, prediction, correct: normaliseAnswer(prediction) === normaliseAnswer(q.answer) };
        });
        const correct = items.filter((i) => i.correct).length;
        return { score: items.length ? correct / items.length : 0, correct, total: items.length, items };
      });
    },
  };
}
