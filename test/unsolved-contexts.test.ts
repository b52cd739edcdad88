// unsolvedContexts (lib/seal/unsolved-contexts.ts): picks, in candidate order, the first contexts
// the model fails without adaptation (slot -1 only), stops as soon as it has enough, and says so
// clearly when the candidates run out. A scripted domain stands in for a model.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Model } from '../lib/model/model.js';
import type { TextTokenizer } from '../lib/model/tokenizer.js';
import type { Domain, Evaluation, SealContext } from '../lib/seal/domain.js';
import { unsolvedContexts } from '../lib/seal/unsolved-contexts.js';

function scripted(scores: Record<string, number>, seen: string[]): Domain<SealContext> {
  return {
    name: 'scripted',
    innerDefaults: { rank: 1, alpha: 1, targets: ['q_proj'], dropout: 0, lr: 0, epochs: 0, batchSize: 1, schedule: 'constant', maxGradNorm: 0, weightDecay: 0 },
    selfEditPrompt: () => [],
    selfEditMaxTokens: 1,
    selfEditStop: [],
    buildTraining: () => ({ ok: false, reason: 'unused' }),
    baselineTraining: () => ({ ok: false, reason: 'unused' }),
    async evaluate(_m, _t, ctx, slots): Promise<Evaluation[]> {
      assert.equal(slots, [-1], 'only the base model is scored');
      seen.push(ctx.id);
      const s = scores[ctx.id]!;
      return [{ score: s, correct: s, total: 1, items: [] }];
    },
  };
}
const model = null as unknown as Model;
const tok = null as unknown as TextTokenizer;
const ctxs = ['a', 'b', 'c', 'd', 'e', 'f'].map((id) => ({ id }));
const scores = { a: 1, b: 0, c: 1, d: 0, e: 0.5, f: 0 };

test('unsolvedContexts: the first failures in candidate order; stops once it has enough', async () => {
  const seen: string[] = [];
  const r = await unsolvedContexts(model, tok, scripted(scores, seen), ctxs, 2);
  assert.equal(r.contexts.map((c) => c.id), ['b', 'd']);
  assert.equal(seen, ['a', 'b', 'c', 'd'], 'nothing scored after the second failure');
  assert.equal([r.examined, r.solved], [4, 2]);
});

test('unsolvedContexts: a partial score counts as unsolved unless maxScore says otherwise', async () => {
  const three = await unsolvedContexts(model, tok, scripted(scores, []), ctxs, 3);
  assert.equal(three.contexts.map((c) => c.id), ['b', 'd', 'e']);
  const strict = await unsolvedContexts(model, tok, scripted(scores, []), ctxs, 3, { maxScore: 0.5 });
  assert.equal(strict.contexts.map((c) => c.id), ['b', 'd', 'f']);
});

test('unsolvedContexts: too few candidates is an error that says how many were found; bad counts are rejected', async () => {
  try {
    await unsolvedContexts(model, tok, scripted(scores, []), ctxs, 5);
    assert.unreachable('should have thrown');
  } catch (e) {
    assert.match(String(e), /only 4 of 6 candidate contexts/);
  }
  try {
    await unsolvedContexts(model, tok, scripted(scores, []), ctxs, -1);
    assert.unreachable('should have thrown');
  } catch (e) {
    assert.instance(e, RangeError);
  }
  assert.equal((await unsolvedContexts(model, tok, scripted(scores, []), ctxs, 0)).contexts, []);
});

test.run();
