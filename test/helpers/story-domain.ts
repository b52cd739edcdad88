// A small SEAL domain on the TinyStories-656K model (../shared) for loop tests: passages are short
// invented facts, questions ask for one word. It exercises the loop's bookkeeping, not accuracy.
import type { Model } from '../../lib/model/model.js';
import type { TextTokenizer } from '../../lib/model/tokenizer.js';
import type { Domain, Evaluation, InnerLoopConfig, SealContext, SelfEditTraining } from '../../lib/seal/domain.js';

export interface StoryContext extends SealContext {
  passage: string;
  questions: { question: string; answer: string }[];
}

const NAMES = ['Lily', 'Tom', 'Sue', 'Ben', 'Max', 'Mia', 'Sam', 'Amy'];
const THINGS = ['ball', 'cat', 'kite', 'hat', 'car', 'dog'];
const COLORS = ['red', 'blue', 'green', 'yellow', 'pink', 'brown'];

export function storyContexts(prefix: string, n: number, offset: number): StoryContext[] {
  return Array.from({ length: n }, (_, i) => {
    const name = NAMES[(i + offset) % NAMES.length]!;
    const thing = THINGS[(i * 3 + offset) % THINGS.length]!;
    const color = COLORS[(i * 5 + offset) % COLORS.length]!;
    return {
      id: `${prefix}-${i}`,
      passage: `${name} had a ${color} ${thing}. ${name} loved the ${thing} very much.`,
      questions: [
        { question: `What color was the ${thing} of ${name}?`, answer: color },
        { question: `What did ${name} love?`, answer: thing },
      ],
    };
  });
}

const INNER: InnerLoopConfig = {
  rank: 4, alpha: 8, targets: ['q_proj', 'v_proj'], dropout: 0, lr: 3e-3, epochs: 2, batchSize: 2,
  schedule: 'linear', maxGradNorm: 1, weightDecay: 0,
};

function training(tok: TextTokenizer, texts: string[]): SelfEditTraining {
  const examples = texts.filter((t) => t.trim() !== '').map((t) => {
    const tokens = tok.encode(t.trim());
    return { tokens, trainMask: tokens.map(() => 1) };
  }).filter((e) => e.tokens.length >= 2);
  return examples.length ? { ok: true, examples, config: INNER } : { ok: false, reason: 'empty self-edit' };
}

export const storyDomain: Domain<StoryContext> = {
  name: 'stories',
  innerDefaults: INNER,
  selfEditMaxTokens: 24,
  selfEditStop: [],
  selfEditPrompt: (ctx, tok) => tok.encode(`${ctx.passage}\n`),
  buildTraining: (ctx, text, tok) => training(tok, [...text.split('\n'), ctx.passage]),
  baselineTraining: (ctx, tok) => training(tok, [ctx.passage]),
  checkSize: (ctx) => ctx.questions.length,
  async evaluate(model: Model, tok: TextTokenizer, ctx: StoryContext, slots: number[]): Promise<Evaluation[]> {
    const prompts = slots.flatMap((slot) => ctx.questions.map((q) => ({ tokens: tok.encode(`${q.question} The answer is`), slot })));
    const out = await model.generate(prompts, { maxNewTokens: 3, tokenizer: tok, eosTokenIds: tok.eosTokenIds });
    return slots.map((_, s) => {
      const items = ctx.questions.map((q, i) => {
        const prediction = (out[s * ctx.questions.length + i]?.text ?? '').trim();
        return { question: q.question, gold: q.answer, prediction, correct: prediction.toLowerCase().includes(q.answer) };
      });
      const correct = items.filter((x) => x.correct).length;
      return { score: correct / items.length, correct, total: items.length, items };
    });
  },
};
