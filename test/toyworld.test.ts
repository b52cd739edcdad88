// The toy world behind `seal demo`: deterministic, disjoint worlds; every answer stated in its
// passage; the tokenizer as a real Hugging Face tokenizer.json (round trip, and the official Rust
// `tokenizers` gives the same ids); the corpus covers every document kind and self-edit style and
// states facts of the pretraining world only; the style classifier recognises the oracle's styles; the domain's
// training sets; and the committed model (when present) answers in-context questions about
// held-out passages far above chance.
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Model } from '../lib/model/model.js';
import { TextTokenizer } from '../lib/model/tokenizer.js';
import { Rng } from '../lib/util/rng.js';
import { DEFAULT_CORPUS, DOC_KINDS, PretrainCorpus } from '../lib/domains/toyworld/corpus.js';
import { normaliseAnswer, toyworldContexts, toyworldDomain } from '../lib/domains/toyworld/domain.js';
import { STYLES, classifySelfEdit, passageBlock, questionPrompt, writeSelfEdit } from '../lib/domains/toyworld/styles.js';
import { UNK_ID, buildVocabulary, writeTokenizer } from '../lib/domains/toyworld/tokenizer.js';
import { SPLITS, makeWorld, namesIn, presetWorld, type World } from '../lib/domains/toyworld/world.js';
import { repoRoot } from './helpers/fixtures.js';

const require = createRequire(import.meta.url);
const rust = require('tokenizers') as typeof import('tokenizers');

const worlds = new Map<string, World>(SPLITS.map((s) => [s, presetWorld(s)]));
const world = (s: string): World => worlds.get(s)!;
const snapshot = (w: World): string => JSON.stringify({ entities: w.entities, passages: w.passages });

test('worlds are deterministic for a seed and differ across seeds', () => {
  const a = makeWorld(11, { entities: 40, split: 'rl' });
  const b = makeWorld(11, { entities: 40, split: 'rl' });
  const c = makeWorld(12, { entities: 40, split: 'rl' });
  assert.equal(snapshot(a), snapshot(b));
  assert.not.equal(snapshot(a), snapshot(c));
  assert.throws(() => makeWorld(1, { entities: 7 }), /even/);
  assert.throws(() => makeWorld(1, { entities: 100_000 }), /names/);
});

test('the pretrain, rl and eval worlds share no person (for any seeds)', () => {
  const pools = SPLITS.map((s) => new Set(namesIn(s).map((n) => n.name)));
  for (let i = 0; i < pools.length; i++) for (let j = i + 1; j < pools.length; j++) {
    for (const n of pools[i]!) assert.not.ok(pools[j]!.has(n), `${n} in two splits`);
  }
  const other = makeWorld(99, { entities: 100, split: 'pretrain' });
  for (const s of ['rl', 'eval']) for (const e of world(s).entities) {
    assert.not.ok(world('pretrain').byName.has(e.name));
    assert.not.ok(other.byName.has(e.name));
  }
});

test('relations are consistent and every answer is stated in its passage', () => {
  for (const s of SPLITS) {
    const w = world(s);
    for (const e of w.entities) {
      assert.is(w.byName.get(e.rels.sibling)!.rels.sibling, e.name);
      assert.is(w.byName.get(e.rels.friend)!.rels.friend, e.name);
      assert.is.not(e.rels.sibling, e.rels.friend);
      assert.ok(w.byName.has(e.rels.mentor) && e.rels.mentor !== e.name);
    }
    const mentees = new Set(w.entities.map((e) => e.rels.mentor));
    assert.is(mentees.size, w.entities.length, 'mentor is a permutation (every "student" question has one answer)');
    for (const p of w.passages) {
      assert.ok(p.facts.length >= 4 && p.facts.length <= 6, `${p.id}: ${p.facts.length} facts`);
      assert.ok(p.questions.length >= p.facts.length);
      for (const q of p.questions) {
        assert.ok(new RegExp(`\\b${q.answer}\\b`).test(p.text), `${p.id}: answer ${q.answer} of "${q.question}" not in "${p.text}"`);
        assert.ok(q.answer.split(' ').length <= 2);
      }
    }
  }
  const evalQuestions = world('eval').passages.reduce((a, p) => a + p.questions.length, 0);
  assert.ok(evalQuestions >= 1000, `eval world has ${evalQuestions} questions`);
});

let tokDir = '';
let tok: TextTokenizer;
test('tokenizer.json loads through TextTokenizer and agrees with the Rust tokenizer', async () => {
  tokDir = await mkdtemp(join(tmpdir(), 'toyworld-tok-'));
  const size = await writeTokenizer(tokDir);
  assert.is(size, buildVocabulary().length);
  assert.ok(size <= 512, `vocabulary of ${size}`);
  tok = await TextTokenizer.load(tokDir);
  assert.is(tok.bosTokenId, 1);
  assert.equal(tok.eosTokenIds, [2]);
  assert.ok(tok.hasChatTemplate);
  const ref = rust.Tokenizer.fromFile(join(tokDir, 'tokenizer.json'));
  const rng = new Rng(3);
  const texts: string[] = [];
  for (const s of SPLITS) {
    const w = world(s);
    const names = w.entities.map((e) => e.name);
    for (const p of w.passages.slice(0, 12)) {
      const gender = w.byName.get(p.subject)!.gender;
      for (const style of STYLES) texts.push(`${passageBlock(p.text)}\nNotes:\n${writeSelfEdit(style, { passage: p, gender, names }, rng)}`);
      for (const q of p.questions) texts.push(`${questionPrompt(q.question)} ${q.answer}`);
    }
  }
  for (const text of texts) {
    const ids = tok.encode(text);
    assert.is(ids[0], 1, 'BOS first');
    assert.not.ok(ids.includes(UNK_ID), `<unk> in ${JSON.stringify(text)}`);
    assert.is(tok.decode(ids, { skipSpecialTokens: true }), text);
    const want = (await ref.encode(text, null, { addSpecialTokens: true })).getIds();
    assert.equal(ids, want, text);
    assert.is(await ref.decode(want, true), text);
  }
  assert.is(tok.encodeChat([{ role: 'user', content: 'Q: How old is Balnor? A:' }, { role: 'assistant', content: ' 42' }]).at(-1), 2);
});

test('a name is its two syllable tokens wherever it stands', () => {
  for (const s of SPLITS) for (const e of world(s).entities.slice(0, 50)) {
    const ids = tok.encode(` ${e.name}`, { addSpecialTokens: false });
    assert.is(ids.length, 2, e.name);
    const possessive = tok.encode(`Q: Who is ${e.name}'s sibling?`, { addSpecialTokens: false });
    assert.ok(possessive.includes(ids[0]!) && possessive.includes(ids[1]!));
  }
});

test('the corpus covers every document kind and style; memorised documents are about the pretraining world only', () => {
  const pre = world('pretrain');
  const corpus = new PretrainCorpus(pre, { ...DEFAULT_CORPUS, seed: 5 });
  const kinds = new Map<string, number>();
  const styles = new Set<string>();
  const names = /\b[A-Z][a-z]{5}\b/g;
  const others = new Set([...world('rl').entities, ...world('eval').entities].map((e) => e.name));
  const after = (DEFAULT_CORPUS.warmStart?.steps ?? 0) + 1;
  let heldOutNamesInContext = 0;
  for (let step = after; step < after + 6; step++) {
    const { sequences, docs } = corpus.batch(step, 2048, tok);
    docs.forEach((d, i) => {
      kinds.set(d.kind, (kinds.get(d.kind) ?? 0) + sequences[i]!.tokens.length);
      if (d.style) styles.add(d.style);
      // Memorised documents are about the pretraining world alone; in-context documents may name
      // anyone (DEFAULT_CORPUS.freshNames), always with random facts.
      if (d.kind === 'bio' || d.kind === 'note' || d.kind === 'cbqa') {
        for (const m of d.text.matchAll(names)) assert.not.ok(others.has(m[0]), `${m[0]} (not a pretraining name) in a ${d.kind} document`);
      } else {
        for (const m of d.text.matchAll(names)) if (others.has(m[0])) heldOutNamesInContext++;
      }
      assert.ok(sequences[i]!.tokens.length <= DEFAULT_CORPUS.maxTokens);
      // Segment-wise tokenization equals tokenizing the whole text.
      assert.equal(Array.from(sequences[i]!.tokens), [...tok.encode(d.text), tok.eosTokenIds[0]!], d.text);
      if (d.kind === 'icqa' || d.kind === 'self-edit') assert.is(sequences[i]!.trainMask![1], DEFAULT_CORPUS.weights.context);
      if (d.kind === 'icqa' || d.kind === 'cbqa') assert.ok(Array.from(sequences[i]!.trainMask!).includes(DEFAULT_CORPUS.weights.answer));
    });
  }
  assert.equal([...kinds.keys()].sort(), [...DOC_KINDS].sort());
  assert.equal([...styles].sort(), [...STYLES].sort());
  assert.ok(heldOutNamesInContext > 0, 'in-context documents draw names from every split');
  const total = [...kinds.values()].reduce((a, b) => a + b, 0);
  for (const k of DOC_KINDS) {
    const share = (kinds.get(k) ?? 0) / total;
    assert.ok(Math.abs(share - DEFAULT_CORPUS.shares[k]) < 0.05, `${k}: ${share.toFixed(3)} of the tokens`);
  }
  // Step batches are a function of (seed, step).
  assert.equal(corpus.batch(3, 1024, tok).docs, new PretrainCorpus(pre, { ...DEFAULT_CORPUS, seed: 5 }).batch(3, 1024, tok).docs);
});

test('the style classifier names every oracle style', () => {
  const w = world('eval');
  const names = w.entities.map((e) => e.name);
  const rng = new Rng(8);
  for (const p of w.passages.slice(0, 40)) {
    const gender = w.byName.get(p.subject)!.gender;
    for (const style of STYLES) {
      const got = classifySelfEdit(writeSelfEdit(style, { passage: p, gender, names }, rng), p);
      assert.is(got.style, style, `${style} read as ${got.style}`);
    }
  }
  assert.is(classifySelfEdit('', w.passages[0]!).style, 'empty');
  assert.is(classifySelfEdit('blah blah\nmore', w.passages[0]!).style, 'other');
});

test('domain: self-edit lines and the passage become training sequences; answers are normalised', () => {
  const domain = toyworldDomain();
  const ctx = toyworldContexts('eval', 1)[0]!;
  const tr = domain.buildTraining(ctx, '- Balnor lives in Ashford.\n\n  Q: How old is Balnor? A: 42  \n', tok);
  assert.ok(tr.ok);
  if (tr.ok) {
    assert.is(tr.examples.length, 3);
    assert.is(tok.decode(tr.examples[1]!.tokens, { skipSpecialTokens: true }), 'Q: How old is Balnor? A: 42');
    assert.is(tok.decode(tr.examples[2]!.tokens, { skipSpecialTokens: true }), passageBlock(ctx.passage.text));
    for (const e of tr.examples) assert.equal(e.trainMask, e.tokens.map((_, i) => (i === 0 ? 0 : 1)));
  }
  const base = domain.baselineTraining(ctx, tok);
  assert.ok(base.ok && base.examples.length === 1);
  assert.is(normaliseAnswer('  Ashford.'), 'ashford');
  assert.is(normaliseAnswer('Bal nor'), 'bal nor');
});

const modelDir = join(repoRoot, 'models/toyworld');
if (existsSync(join(modelDir, 'model.safetensors'))) {
  test('the committed model answers in-context questions about held-out passages', async () => {
    const mtok = await TextTokenizer.load(modelDir);
    const model = await Model.load(modelDir);
    const ctxs = toyworldContexts('eval', 6);
    const prompts = ctxs.flatMap((c) => c.passage.questions.map((q) => ({ text: `${passageBlock(c.passage.text)}\n${questionPrompt(q.question)}`, gold: q.answer })));
    const out = await model.generate(prompts.map((p) => ({ tokens: mtok.encode(p.text) })), { maxNewTokens: 6, stop: ['\n'], tokenizer: mtok, eosTokenIds: mtok.eosTokenIds });
    const correct = out.filter((c) => normaliseAnswer(c.text ?? '') === normaliseAnswer(prompts[c.prompt]!.gold)).length;
    assert.ok(correct / prompts.length > 0.6, `in-context accuracy ${correct}/${prompts.length}`);
    // Closed book, the same questions are near chance: the held-out people were never seen.
    const domain = toyworldDomain();
    let cb = 0, n = 0;
    for (const c of ctxs) { const [e] = await domain.evaluate(model, mtok, c, [-1]); cb += e!.correct; n += e!.total; }
    assert.ok(cb / n < 0.25, `closed-book accuracy without adaptation ${cb}/${n}`);
    await model.dispose();
  });
} else {
  console.log(`skip: committed toyworld model (no ${modelDir}/model.safetensors)`);
}

test('cleanup', async () => {
  if (tokDir) await rm(tokDir, { recursive: true, force: true });
});

test.run();
