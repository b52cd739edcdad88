// How useful is each self-edit style? On held-out evaluation-world passages, applies (inner-loop
// LoRA fine-tune, the toyworld domain's defaults unless overridden) one oracle self-edit of each
// style per passage and scores closed-book QA, next to no adaptation and passage-only fine-tuning;
// then samples the base model's own self-edits, names their styles and scores them too. Also checks
// the model's raw capabilities: in-context QA on held-out passages and closed-book QA on facts it
// was pretrained on.
//
//   npx tsx scripts/toyworld-styles.ts [--model models/toyworld] [--contexts 40] [--samples 4]
//        [--lr X] [--epochs N] [--rank R] [--alpha A] [--batch B] [--targets q_proj,v_proj] [--schedule S]
//        [--threads N] [--seed S] [--json FILE]
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Model } from '../lib/model/model.js';
import type { ProjName } from '../lib/model/native-model.js';
import { TextTokenizer } from '../lib/model/tokenizer.js';
import { native } from '../lib/native.js';
import type { InnerLoopConfig } from '../lib/seal/domain.js';
import { runInnerJobs, type InnerJob } from '../lib/seal/inner-loop.js';
import { describeSelfEdit, normaliseAnswer, toyworldContexts, toyworldDomain, type ToyContext } from '../lib/domains/toyworld/domain.js';
import { STYLES, passageBlock, qaLine, questionPrompt, writeSelfEdit, type StyleLabel } from '../lib/domains/toyworld/styles.js';
import { factsOf, forwardQuestion, isRel, makeWorld, reverseQuestion, WORLD_PRESETS } from '../lib/domains/toyworld/world.js';
import { DEFAULT_PRETRAIN } from '../lib/domains/toyworld/pretrain.js';
import { Rng, rngU32 } from '../lib/util/rng.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'models/toyworld' }, contexts: { type: 'string', default: '40' }, samples: { type: 'string', default: '4' },
    lr: { type: 'string' }, epochs: { type: 'string' }, rank: { type: 'string' }, alpha: { type: 'string' }, batch: { type: 'string' },
    targets: { type: 'string' }, schedule: { type: 'string' }, threads: { type: 'string' }, seed: { type: 'string', default: '7' },
    json: { type: 'string' }, parallel: { type: 'string', default: '32' }, 'skip-samples': { type: 'boolean' },
  },
});
if (values.threads) native().setThreads(Number(values.threads));
const seed = Number(values.seed);
const inner: Partial<InnerLoopConfig> = {};
if (values.lr) inner.lr = Number(values.lr);
if (values.epochs) inner.epochs = Number(values.epochs);
if (values.rank) inner.rank = Number(values.rank);
if (values.alpha) inner.alpha = Number(values.alpha);
if (values.batch) inner.batchSize = Number(values.batch);
if (values.targets) inner.targets = values.targets.split(',') as ProjName[];
if (values.schedule) inner.schedule = values.schedule as InnerLoopConfig['schedule'];
const domain = toyworldDomain({ inner });
const tok = await TextTokenizer.load(values.model!);
const model = await Model.load(values.model!);
const contexts = toyworldContexts('eval', Number(values.contexts));
const evalWorld = makeWorld(WORLD_PRESETS.eval.seed, { entities: WORLD_PRESETS.eval.entities, split: 'eval' });
const names = evalWorld.entities.map((e) => e.name);
const nQuestions = contexts.reduce((a, c) => a + c.passage.questions.length, 0);
const t0 = Date.now();
const log = (s: string): void => { process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(0)}s] ${s}\n`); };
log(`model ${values.model}; ${contexts.length} held-out passages, ${nQuestions} questions; inner loop ${JSON.stringify(domain.innerDefaults)}`);

interface Row { condition: string; accuracy: number; forward: number; reverse: number; questions: number; selfEdits: number; seconds: number }
const rows: Row[] = [];
const pct = (x: number): string => (100 * x).toFixed(1).padStart(5);

function tally(condition: string, evals: { ctx: ToyContext; items: { correct: boolean }[] }[], seconds: number): Row {
  let c = 0, n = 0, fc = 0, fn = 0, rc = 0, rn = 0;
  for (const { ctx, items } of evals) {
    items.forEach((it, k) => {
      const q = ctx.passage.questions[k]!;
      n++; if (it.correct) c++;
      if (q.direction === 'forward') { fn++; if (it.correct) fc++; } else { rn++; if (it.correct) rc++; }
    });
  }
  const row = { condition, accuracy: c / n, forward: fc / Math.max(1, fn), reverse: rc / Math.max(1, rn), questions: n, selfEdits: evals.length, seconds };
  rows.push(row);
  log(`${condition.padEnd(28)} acc ${pct(row.accuracy)}  forward ${pct(row.forward)}  reverse ${pct(row.reverse)}  (${n} answers, ${seconds.toFixed(0)} s)`);
  return row;
}

async function runJobs(condition: string, jobs: InnerJob<ToyContext>[]): Promise<{ ctx: ToyContext; score: number; items: { correct: boolean }[] }[]> {
  const t = Date.now();
  const res = await runInnerJobs(model, tok, domain, jobs, { parallel: Number(values.parallel) });
  const evals = res.map((r, i) => ({ ctx: jobs[i]!.ctx, score: r.evaluation?.score ?? 0, items: r.evaluation?.items ?? jobs[i]!.ctx.passage.questions.map(() => ({ correct: false })) }));
  tally(condition, evals, (Date.now() - t) / 1000);
  return evals;
}

// ---- capabilities of the raw model ----
{
  // (a) in-context QA on held-out passages.
  const prompts = contexts.flatMap((c) => c.passage.questions.map((q) => ({ tokens: tok.encode(`${passageBlock(c.passage.text)}\n${questionPrompt(q.question)}`), gold: q.answer, dir: q.direction })));
  const out = await model.generate(prompts.map((p) => ({ tokens: p.tokens })), { maxNewTokens: 8, stop: ['\n'], tokenizer: tok, eosTokenIds: tok.eosTokenIds });
  let ok = 0, fok = 0, fn = 0;
  out.forEach((c) => { const p = prompts[c.prompt]!; const hit = normaliseAnswer(c.text ?? '') === normaliseAnswer(p.gold); if (hit) ok++; if (p.dir === 'forward') { fn++; if (hit) fok++; } });
  log(`capability (a) in-context QA, held-out passages: ${pct(ok / prompts.length)}% (forward ${pct(fok / fn)}%, reverse ${pct((ok - fok) / Math.max(1, prompts.length - fn))}%) of ${prompts.length}`);
  // (b) closed-book QA on pretraining facts of the core people.
  const pre = makeWorld(WORLD_PRESETS.pretrain.seed, { entities: WORLD_PRESETS.pretrain.entities, split: 'pretrain' });
  const rng = new Rng(seed);
  const core = pre.entities.slice(0, DEFAULT_PRETRAIN.corpus.coreEntities);
  const qs = core.slice(0, 60).flatMap((e) => factsOf(e).map((f) => (isRel(f.key) && rng.uniform() < 0.4 ? reverseQuestion(f, rng) : forwardQuestion(f, rng))));
  const out2 = await model.generate(qs.map((q) => ({ tokens: tok.encode(questionPrompt(q.question)) })), { maxNewTokens: 8, stop: ['\n'], tokenizer: tok, eosTokenIds: tok.eosTokenIds });
  const ok2 = out2.filter((c) => normaliseAnswer(c.text ?? '') === normaliseAnswer(qs[c.prompt]!.answer)).length;
  log(`capability (b) closed-book QA on pretraining facts (core people): ${pct(ok2 / qs.length)}% of ${qs.length}`);
  // Same, on the non-core pretraining people (seen only in in-context documents).
  const rest = pre.entities.slice(DEFAULT_PRETRAIN.corpus.coreEntities, DEFAULT_PRETRAIN.corpus.coreEntities + 60).flatMap((e) => factsOf(e).map((f) => forwardQuestion(f, rng)));
  const out3 = await model.generate(rest.map((q) => ({ tokens: tok.encode(questionPrompt(q.question)) })), { maxNewTokens: 8, stop: ['\n'], tokenizer: tok, eosTokenIds: tok.eosTokenIds });
  const ok3 = out3.filter((c) => normaliseAnswer(c.text ?? '') === normaliseAnswer(rest[c.prompt]!.answer)).length;
  log(`             closed-book QA on non-core pretraining people: ${pct(ok3 / rest.length)}% of ${rest.length}`);
}

// ---- conditions ----
const jobSeed = (condition: string, i: number): number => rngU32(seed, [...condition].reduce((a, ch) => (a * 31 + ch.charCodeAt(0)) >>> 0, i));
{
  const t = Date.now();
  const evals = [];
  for (const ctx of contexts) {
    const [ev] = await domain.evaluate(model, tok, ctx, [-1]);
    evals.push({ ctx, items: ev!.items });
  }
  tally('no adaptation', evals, (Date.now() - t) / 1000);
}
await runJobs('passage only', contexts.map((ctx, i) => ({ ctx, training: domain.baselineTraining(ctx, tok), seed: jobSeed('passage', i) })));
const styleRows: Record<string, number> = {};
for (const style of STYLES) {
  const rng = new Rng(rngU32(seed, 1000 + STYLES.indexOf(style)));
  const ev = await runJobs(`oracle ${style}`, contexts.map((ctx, i) => {
    const text = writeSelfEdit(style, { passage: ctx.passage, gender: ctx.gender, names }, rng);
    return { ctx, training: domain.buildTraining(ctx, text, tok), seed: jobSeed(style, i) };
  }));
  styleRows[style] = ev.reduce((a, e) => a + e.items.filter((x) => x.correct).length, 0) / nQuestions;
}

// ---- the base model's own self-edits ----
let sampled: { mix: Record<string, number>; byStyle: Record<string, { n: number; accuracy: number; statementsRight: number }>; examples: Record<string, string> } | undefined;
if (!values['skip-samples']) {
  const k = Number(values.samples);
  const t = Date.now();
  const gen = await model.generate(contexts.map((c) => ({ tokens: domain.selfEditPrompt(c, tok) })), {
    n: k, maxNewTokens: domain.selfEditMaxTokens, temperature: 1, topP: 0.95, seed, eosTokenIds: tok.eosTokenIds, tokenizer: tok,
  });
  log(`sampled ${gen.length} self-edits in ${((Date.now() - t) / 1000).toFixed(0)} s`);
  const jobs: InnerJob<ToyContext>[] = [];
  const labels: StyleLabel[] = [];
  const fidelity: number[] = [];
  const examples: Record<string, string> = {};
  for (const g of gen) {
    const ctx = contexts[g.prompt]!;
    const text = (g.text ?? '').trim();
    const analysis = describeSelfEdit(ctx, text);
    const label = analysis.style;
    labels.push(label);
    fidelity.push(analysis.right + analysis.wrong > 0 ? analysis.right / (analysis.right + analysis.wrong) : NaN);
    examples[label] ??= text;
    jobs.push({ ctx, training: domain.buildTraining(ctx, text, tok), seed: jobSeed('sampled', jobs.length) });
  }
  const evals = await runJobs(`base self-edits (k=${k})`, jobs);
  const mix: Record<string, number> = {};
  const byStyle: Record<string, { n: number; correct: number; total: number; right: number; stated: number }> = {};
  labels.forEach((l, i) => {
    mix[l] = (mix[l] ?? 0) + 1 / labels.length;
    const e = evals[i]!;
    const b = (byStyle[l] ??= { n: 0, correct: 0, total: 0, right: 0, stated: 0 });
    b.n++; b.correct += e.items.filter((x) => x.correct).length; b.total += e.items.length;
    const f = fidelity[i]!;
    if (!Number.isNaN(f)) { b.right += f; b.stated++; }
  });
  sampled = {
    mix,
    byStyle: Object.fromEntries(Object.entries(byStyle).map(([l, b]) => [l, { n: b.n, accuracy: b.correct / b.total, statementsRight: b.stated ? b.right / b.stated : NaN }])),
    examples,
  };
  log('base model style mix (share of samples; QA accuracy after applying them; share of their statements that are right):');
  for (const [l, share] of Object.entries(mix).sort((a, b) => b[1] - a[1])) {
    const b = sampled.byStyle[l]!;
    log(`  ${l.padEnd(14)} ${pct(share)}%   acc ${pct(b.accuracy)}   statements right ${Number.isNaN(b.statementsRight) ? '   -' : pct(b.statementsRight)}%  (n=${b.n})`);
  }
  for (const [l, text] of Object.entries(examples)) log(`  example ${l}: ${JSON.stringify(text).slice(0, 300)}`);
}

process.stdout.write(`\n| condition | accuracy | forward q. | reverse q. | answers |\n| --- | --- | --- | --- | --- |\n`);
for (const r of rows) process.stdout.write(`| ${r.condition} | ${pct(r.accuracy)} | ${pct(r.forward)} | ${pct(r.reverse)} | ${r.questions} |\n`);
if (values.json) writeFileSync(values.json, `${JSON.stringify({ model: values.model, inner: domain.innerDefaults, contexts: contexts.length, questions: nQuestions, rows, styles: styleRows, sampled, seconds: (Date.now() - t0) / 1000 }, null, 2)}\n`);
log(`done in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
await model.dispose();
