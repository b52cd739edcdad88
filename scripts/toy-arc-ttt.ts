// How much does each TTT configuration help the toy few-shot model, per task family? Scores
// held-out toy tasks with no adaptation and with TTT under each configuration given (the demo's
// toy-scale inner loop, no step budget), and prints solved counts per family. This is how the
// table in models/toy-arc/README.md is made, and how to judge a new toy model's TTT headroom
// (what SEAL can gain) before running the demo.
//
//   npx tsx scripts/toy-arc-ttt.ts [--model models/toy-arc] [--tasks 48] [--split eval] [--unsolved] [--families recolour,shift] [--demos 3]
//        [--config 'lr=1e-3,epochs=10,aug=basic+repeat,loss=output' ...] [--threads N] [--seed S] [--json FILE]
//
// Without --config it sweeps a standard set of configurations. --unsolved scores the first tasks the
// model fails in context instead (the task selection of `seal demo arc`).
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { TOY_ARC_DOMAIN, unsolvedToyTasks } from '../lib/cli/commands/arc-demo.js';
import { arcContexts, arcDomain, arcSeed, type ArcContext } from '../lib/domains/arc/domain.js';
import type { SelfEditConfig } from '../lib/domains/arc/self-edit-config.js';
import { toySplit, type ToyFamily, type ToySplit, type ToyTask } from '../lib/domains/arc/toy-family.js';
import { Model } from '../lib/model/model.js';
import { TextTokenizer } from '../lib/model/tokenizer.js';
import { native } from '../lib/native.js';
import { runInnerJobs } from '../lib/seal/inner-loop.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'models/toy-arc' }, tasks: { type: 'string', default: '48' }, split: { type: 'string', default: 'eval' },
    config: { type: 'string', multiple: true }, families: { type: 'string' }, demos: { type: 'string' }, 'permute-n': { type: 'string' }, 'max-examples': { type: 'string' }, rank: { type: 'string' }, threads: { type: 'string' }, seed: { type: 'string', default: '0' }, json: { type: 'string' }, unsolved: { type: 'boolean' },
  },
});
if (values.threads) native().setThreads(Number(values.threads));
const domainOptions = {
  ...TOY_ARC_DOMAIN,
  ...(values.rank ? { inner: { ...TOY_ARC_DOMAIN.inner, rank: Number(values.rank), alpha: 2 * Number(values.rank) } } : {}),
  ttt: {
    ...TOY_ARC_DOMAIN.ttt,
    ...(values['permute-n'] !== undefined ? { permuteN: Number(values['permute-n']) } : {}),
    ...(values['max-examples'] !== undefined ? { maxExamples: Number(values['max-examples']) } : {}),
  },
};
const seed = Number(values.seed);

/** 'lr=1e-3,epochs=10,aug=basic+repeat,loss=output' → a configuration (aug=none for no augmentation). */
function parseConfig(spec: string): SelfEditConfig {
  const kv = new Map(spec.split(',').map((p) => p.split('=') as [string, string]));
  const aug = (kv.get('aug') ?? 'none').split('+');
  for (const k of kv.keys()) if (!['lr', 'epochs', 'aug', 'loss'].includes(k)) throw new Error(`--config ${spec}: unknown key ${k}`);
  return {
    augmentations: { basic: aug.includes('basic'), size: aug.includes('size'), chain: aug.includes('chain'), repeat: aug.includes('repeat') },
    lossOn: kv.get('loss') === 'all' ? 'all' : 'output',
    learningRate: Number(kv.get('lr') ?? '1e-3'),
    epochs: Number(kv.get('epochs') ?? '4'),
  };
}
const specs = values.config ?? [
  'lr=1e-3,epochs=4', 'lr=1e-3,epochs=10', 'lr=1e-3,epochs=20', 'lr=3e-3,epochs=10', 'lr=3e-4,epochs=20',
  'lr=1e-3,epochs=10,aug=basic', 'lr=1e-3,epochs=10,aug=repeat', 'lr=1e-2,epochs=4',
];

const tok = await TextTokenizer.load(values.model!);
const model = await Model.load(values.model!);
const taskOptions = {
  ...(values.families ? { families: values.families.split(',') as ToyFamily[] } : {}),
  ...(values.demos ? { demos: Number(values.demos) } : {}),
};
let tasks: ToyTask[];
if (!values.unsolved) tasks = toySplit(values.split as ToySplit, Number(values.tasks), taskOptions);
else {
  const picked = await unsolvedToyTasks(model, tok, arcDomain({ ...domainOptions, seed }), values.split as ToySplit, Number(values.tasks), { taskOptions });
  tasks = picked.tasks;
  process.stderr.write(`${tasks.length} tasks unsolved in context (${picked.solved} of ${picked.examined} examined were solved)\n`);
}
const contexts = arcContexts(tasks);
const familyOf = new Map<string, ToyTask>(tasks.map((t) => [t.id, t]));
const families = [...new Set(tasks.map((t) => t.family))].sort();
const t0 = Date.now();
const log = (s: string): void => { process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(0)}s] ${s}\n`); };

interface Row { condition: string; solved: number; tasks: number; byFamily: Record<string, [number, number]>; solvedIds: string[]; seconds: number }
const rows: Row[] = [];
function tally(condition: string, scores: { ctx: ArcContext; solved: boolean }[], seconds: number): void {
  const byFamily: Record<string, [number, number]> = Object.fromEntries(families.map((f) => [f, [0, 0]]));
  for (const { ctx, solved } of scores) {
    const f = byFamily[familyOf.get(ctx.id)!.family]!;
    f[0] += solved ? 1 : 0;
    f[1] += 1;
  }
  const solvedIds = scores.filter((s) => s.solved).map((s) => s.ctx.id);
  rows.push({ condition, solved: solvedIds.length, tasks: scores.length, byFamily, solvedIds, seconds });
  log(`${condition}: ${solvedIds.length}/${scores.length}  ${families.map((f) => `${f} ${byFamily[f]![0]}/${byFamily[f]![1]}`).join('  ')}`);
}

{
  const start = Date.now();
  const domain = arcDomain({ ...domainOptions, seed });
  const scores = [];
  for (const ctx of contexts) scores.push({ ctx, solved: ((await domain.evaluate(model, tok, ctx, [-1]))[0]?.score ?? 0) > 0 });
  tally('no adaptation', scores, (Date.now() - start) / 1000);
}
for (const spec of specs) {
  const start = Date.now();
  const domain = arcDomain({ ...domainOptions, fixed: parseConfig(spec), seed });
  const jobs = contexts.map((ctx) => ({ ctx, training: domain.baselineTraining!(ctx, tok), seed: arcSeed(seed, 'sweep', ctx.id) }));
  const results = await runInnerJobs(model, tok, domain, jobs, { parallel: 16 });
  tally(spec, results.map((r, i) => ({ ctx: contexts[i]!, solved: (r.evaluation?.score ?? 0) > 0 })), (Date.now() - start) / 1000);
  const losses = results.flatMap((r) => (r.finalLoss === null ? [] : [r.finalLoss])).sort((a, b) => a - b);
  log(`  TTT: median final loss ${losses[losses.length >> 1]?.toFixed(3)}, median ${[...results.map((r) => r.steps)].sort((a, b) => a - b)[results.length >> 1]} steps, ${results[0]?.sequences} examples (first task)`);
}

const union = new Set(rows.slice(1).flatMap((r) => r.solvedIds));
const pad = (s: string, n: number) => s.padEnd(n);
process.stdout.write(`\n${pad('condition', 40)}${pad('solved', 10)}${families.map((f) => pad(f, 12)).join('')}seconds\n`);
for (const r of rows) {
  process.stdout.write(`${pad(r.condition, 40)}${pad(`${r.solved}/${r.tasks}`, 10)}${families.map((f) => pad(`${r.byFamily[f]![0]}/${r.byFamily[f]![1]}`, 12)).join('')}${r.seconds.toFixed(0)}\n`);
}
process.stdout.write(`${pad('any TTT configuration above (oracle)', 40)}${union.size}/${contexts.length}\n`);
if (values.json) writeFileSync(values.json, `${JSON.stringify({ model: values.model, split: values.split, rows, oracle: union.size }, null, 2)}\n`);
