// The knowledge-incorporation domain (SQuAD passages) as a SEAL Domain: the reference's self-edit
// prompts and splitting, LoRA inner loop with its defaults, closed-book QA graded by a Judge.
import type { Model } from '../../model/model.js';
import type { TextTokenizer } from '../../model/tokenizer.js';
import type { Domain, Evaluation, InnerLoopConfig, SealContext, SelfEditTraining } from '../../seal/domain.js';
import type { Judge } from './judges.js';
import { closedBookQaPrompt, selfEditPrompt, topicQuestion, type SelfEditVariant } from './prompts.js';
import { buildTrainSequences } from './self-edit-split.js';
import type { SquadPassage } from './squad-data.js';

export interface KnowledgeContext extends SealContext {
  passage: SquadPassage;
}

export function knowledgeContexts(passages: readonly SquadPassage[], prefix: string): KnowledgeContext[] {
  return passages.map((passage) => ({ id: `${prefix}:${passage.id}`, passage }));
}

/** The reference's inner loop (§1.4): LoRA r 32, alpha 64, q/v, lr 1e-3, 10 epochs, batch 1, linear decay, clip 1. */
export const REFERENCE_INNER_LOOP: InnerLoopConfig = {
  rank: 32, alpha: 64, targets: ['q_proj', 'v_proj'], dropout: 0, lr: 1e-3, epochs: 10, batchSize: 1,
  schedule: 'linear', maxGradNorm: 1, weightDecay: 0,
};

export interface KnowledgeDomainOptions {
  variant: SelfEditVariant;
  judge: Judge;
  inner?: InnerLoopConfig;
  /** Split self-edits into one sequence per line (the reference's evaluation setting, §1.3). Default true. */
  splitNewlines?: boolean;
  /**
   * The reference's behaviour (§1.4): pad every training sequence with EOS to this length and train
   * on the padding too. Off by default: sealkit trains on real tokens only.
   */
  lossOnPaddingTo?: number;
  /** Longest self-edit sampled (the reference allows 8192). Default 1024. */
  selfEditMaxTokens?: number;
  /** Answer length (the reference: 64). */
  answerMaxTokens?: number;
}

export function knowledgeDomain(o: KnowledgeDomainOptions): Domain<KnowledgeContext> {
  const inner = o.inner ?? REFERENCE_INNER_LOOP;
  const split = o.splitNewlines ?? true;
  const toTraining = (sequences: string[], tok: TextTokenizer): SelfEditTraining => {
    const eos = tok.eosTokenIds[0];
    const examples = sequences.map((s) => {
      let tokens = tok.encode(s);
      if (o.lossOnPaddingTo !== undefined && eos !== undefined) {
        tokens = tokens.slice(0, o.lossOnPaddingTo);
        while (tokens.length < o.lossOnPaddingTo) tokens.push(eos);
      }
      return { tokens, trainMask: tokens.map(() => 1) };
    }).filter((e) => e.tokens.length >= 2);
    return examples.length ? { ok: true, examples, config: inner } : { ok: false, reason: 'no training sequence of at least 2 tokens' };
  };
  return {
    name: 'knowledge',
    innerDefaults: inner,
    selfEditMaxTokens: o.selfEditMaxTokens ?? 1024,
    selfEditStop: [],
    selfEditPrompt: (ctx, tok) => tok.encode(selfEditPrompt(o.variant, ctx.passage)),
    buildTraining: (ctx, text, tok) => toTraining(buildTrainSequences(text, ctx.passage, { splitNewlines: split }), tok),
    baselineTraining: (ctx, tok) => toTraining(buildTrainSequences('', ctx.passage, { splitNewlines: split }), tok),
    checkSize: (ctx) => ctx.passage.questions.length,
    async evaluate(model: Model, tok: TextTokenizer, ctx: KnowledgeContext, slots: number[]): Promise<Evaluation[]> {
      const qs = ctx.passage.questions;
      const prompts = slots.flatMap((slot) => qs.map((q) => ({ tokens: tok.encode(closedBookQaPrompt(ctx.passage.title, q.question)), slot })));
      const out = await model.generate(prompts, { maxNewTokens: o.answerMaxTokens ?? 64, tokenizer: tok, eosTokenIds: tok.eosTokenIds.length ? tok.eosTokenIds : model.config.eosTokenIds });
      const items = out.map((c) => {
        const q = qs[c.prompt % qs.length]!;
        return { question: topicQuestion(ctx.passage.title, q.question), gold: q.answer, prediction: (c.text ?? '').trim() };
      });
      const verdicts = await o.judge.grade(items);
      return slots.map((_, s) => {
        const part = items.slice(s * qs.length, (s + 1) * qs.length).map((it, i) => ({ ...it, correct: verdicts[s * qs.length + i] ?? false }));
        const correct = part.filter((x) => x.correct).length;
        return { score: qs.length ? correct / qs.length : 0, correct, total: qs.length, items: part };
      });
    },
  };
}
