// `seal demo arc` — SEAL's few-shot experiment end to end on the toy few-shot family
// (lib/domains/arc/toy-family.ts) and the small model the project pretrained on it
// (models/toy-arc): no adaptation, TTT with a fixed configuration, TTT with configurations the
// base model writes, and with those the model writes after one ReST-EM round, on held-out tasks.
// Like the reference's filtered task subsets (§4.1), the RL and evaluation tasks are those the
// base model fails in context (lib/seal/unsolved-contexts.ts); `--tasks all` skips the filter.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { arcContexts, arcDomain, type ArcContext, type ArcDomainOptions } from '../../domains/arc/domain.js';
import type { SelfEditConfig } from '../../domains/arc/self-edit-config.js';
import { toySplit, type ToySplit, type ToyTask, type ToyTaskOptions } from '../../domains/arc/toy-family.js';
import { Model } from '../../model/model.js';
import { TextTokenizer } from '../../model/tokenizer.js';
import type { Domain } from '../../seal/domain.js';
import { runSeal, type SealConfig } from '../../seal/loop.js';
import { unsolvedContexts } from '../../seal/unsolved-contexts.js';
import { accuracySvg } from '../../seal/plot.js';
import { UsageError } from '../command.js';
import { progress, type Progress } from '../progress.js';

export const TOY_ARC_MODEL_DIR = fileURLToPath(new URL('../../../models/toy-arc/', import.meta.url));

/**
 * The toy scale of the reference's TTT (§4.3–4.6): a smaller LoRA for the small model, a smaller
 * cap on the TTT set and a cost cap scaled with it. Learning rate, epochs, augmentations and the
 * loss strategy still come from each self-edit.
 */
export const TOY_ARC_DOMAIN: ArcDomainOptions = {
  inner: { rank: 16, alpha: 32, batchSize: 2, schedule: 'cosine', maxGradNorm: 1, weightDecay: 0 },
  ttt: { maxExamples: 32, maxTokens: 400, maxSteps: 64 },
  selfEditMaxTokens: 128,
  evalBatch: 256,
};

/** The fixed-configuration baseline at toy scale: the reference's ttt.py families and loss, a toy learning rate. */
export const TOY_ARC_FIXED: SelfEditConfig = {
  augmentations: { basic: true, size: true, chain: true, repeat: true },
  lossOn: 'output',
  learningRate: 0.001,
  epochs: 2,
};

export const ARC_DEMO_SIZES = {
  full: { evalTasks: 48, trainTasks: 48, samples: 8, rounds: 1, evalSamples: 2 },
  quick: { evalTasks: 6, trainTasks: 4, samples: 3, rounds: 1, evalSamples: 2 },
};

export function arcDemoConfig(quick: boolean, seed: number): SealConfig {
  const size = quick ? ARC_DEMO_SIZES.quick : ARC_DEMO_SIZES.full;
  return {
    seed, rounds: size.rounds, evalRounds: 'last', contextsPerRound: size.trainTasks, samples: size.samples, evalSamples: size.evalSamples, repeats: 1,
    filter: { kind: 'min-reward', min: 1 },
    sampling: { temperature: 0.8, topP: 1 },
    policy: { rank: 16, alpha: 32, lr: 3e-3, epochs: 8, batchSize: 4 }, parallel: 16,
    baselines: { noAdaptation: true, baselineTraining: true, baseSelfEdits: true },
    names: { noAdaptation: 'no adaptation', baselineTraining: 'fixed TTT', baseSelfEdits: 'base self-edits', round: 'SEAL' },
  };
}

/** Candidate tasks per wanted task when selecting those the model fails in context. */
const CANDIDATES_PER_TASK = 4;

/** The first `count` toy tasks of a split that the model fails in context (the demo's task selection). */
export async function unsolvedToyTasks(
  model: Model, tok: TextTokenizer, domain: Domain<ArcContext>, split: ToySplit, count: number,
  options: { taskOptions?: ToyTaskOptions; onProgress?: (found: number, examined: number) => void } = {},
): Promise<{ tasks: ToyTask[]; examined: number; solved: number }> {
  const candidates = toySplit(split, CANDIDATES_PER_TASK * count, options.taskOptions);
  const picked = await unsolvedContexts(model, tok, domain, arcContexts(candidates), count, options.onProgress ? { onProgress: options.onProgress } : {});
  const ids = new Set(picked.contexts.map((c) => c.id));
  return { tasks: candidates.filter((t) => ids.has(t.id)), examined: picked.examined, solved: picked.solved };
}

export const ARC_DEMO_USAGE = `usage: seal demo arc [--quick] [--tasks unsolved|all] [--run-dir DIR] [--resume DIR] [--seed S] [--threads N] [--json]

  SEAL's few-shot (ARC) experiment on the toy few-shot family with the model the project pretrained
  on it (models/toy-arc), on held-out tasks: no adaptation, fixed TTT, base self-edits, SEAL (one
  ReST-EM round on separate training tasks). Prints the results table and writes the run directory.
  --tasks   unsolved (default): the first RL and evaluation tasks the base model fails in context,
            as the reference's task subsets were filtered for its model (so no adaptation scores 0
            and a reward means adaptation made the difference); all: the first tasks of each split
  --quick   a smaller run for tests
  --json    last line: {"conditions": [{"name", "accuracy", "tasks", "evaluations"}], "run_dir": ...}
            (accuracy over (task, self-edit) pairs, the reference's metric; evaluations = pairs)`;

export async function arcDemo(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { quick: { type: 'boolean' }, tasks: { type: 'string', default: 'unsolved' }, 'run-dir': { type: 'string' }, resume: { type: 'string' }, seed: { type: 'string', default: '0' }, threads: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean' } },
  });
  if (values.help) {
    process.stdout.write(`${ARC_DEMO_USAGE}\n`);
    return 0;
  }
  if (values.tasks !== 'unsolved' && values.tasks !== 'all') throw new UsageError(`demo arc: --tasks must be unsolved or all, got '${values.tasks}'`);
  if (!existsSync(join(TOY_ARC_MODEL_DIR, 'model.safetensors'))) throw new UsageError(`demo arc: the toy model is missing (${TOY_ARC_MODEL_DIR}); rebuild it with scripts/build-toy-arc-model.sh`);
  const seed = Number(values.seed);
  if (!Number.isSafeInteger(seed) || seed < 0) throw new UsageError('demo arc: --seed must be a non-negative integer');
  if (values.threads !== undefined) {
    const n = Number(values.threads);
    if (!Number.isInteger(n) || n < 1) throw new UsageError('demo arc: --threads must be a positive integer');
    (await import('../../native.js')).native().setThreads(n);
  }
  const quick = values.quick ?? false;
  const size = quick ? ARC_DEMO_SIZES.quick : ARC_DEMO_SIZES.full;
  const runDir = values.resume ?? values['run-dir'] ?? join('runs', `demo-arc-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  const tok = await TextTokenizer.load(TOY_ARC_MODEL_DIR);
  let bar: Progress | undefined;
  let stage = '';
  const t0 = Date.now();
  const domain = arcDomain({ ...TOY_ARC_DOMAIN, fixed: TOY_ARC_FIXED, seed });
  const selection: Record<string, unknown> = { tasks: values.tasks };
  const picked = { rl: [] as ToyTask[], eval: [] as ToyTask[] };
  const wanted = [['rl', size.trainTasks], ['eval', size.evalTasks]] as const;
  if (values.tasks === 'all') {
    for (const [split, want] of wanted) picked[split] = toySplit(split, want);
  } else {
    const model = await Model.load(TOY_ARC_MODEL_DIR);
    try {
      for (const [split, want] of wanted) {
        bar = progress(`selecting ${split} tasks unsolved in context`.padEnd(34), want, ['detail']);
        const r = await unsolvedToyTasks(model, tok, domain, split, want, {
          onProgress: (found, examined) => bar?.update(found, { detail: `${examined} examined` }),
        });
        bar.stop();
        picked[split] = r.tasks;
        selection[split] = { examined: r.examined, solved_in_context: r.solved, ids: r.tasks.map((t) => t.id) };
      }
    } finally {
      await model.dispose();
    }
  }
  const trainContexts = arcContexts(picked.rl);
  const evalContexts = arcContexts(picked.eval);
  mkdirSync(runDir, { recursive: true });
  const selectionPath = join(runDir, 'task-selection.json');
  const selectionText = `${JSON.stringify(selection, null, 2)}\n`;
  if (existsSync(selectionPath) && readFileSync(selectionPath, 'utf8') !== selectionText) {
    throw new UsageError(`demo arc: ${runDir} was run on other tasks (see ${selectionPath}); resume with the same --tasks and model, or start a new run directory`);
  }
  writeFileSync(selectionPath, selectionText);
  const result = await runSeal({
    runDir, modelDir: TOY_ARC_MODEL_DIR, tokenizer: tok, domain, trainContexts, evalContexts,
    config: arcDemoConfig(quick, seed),
    onProgress: (p) => {
      if (p.stage !== stage) { bar?.stop(); stage = p.stage; bar = progress(p.stage.padEnd(34), p.total, ['detail']); }
      bar?.update(p.done, { detail: p.detail ?? '' });
    },
  });
  bar?.stop();
  writeFileSync(join(result.runDir, 'plot.svg'), accuracySvg(result.summary.conditions, `SEAL few-shot on the toy family (${quick ? 'quick' : 'full'} demo)`));
  const which = values.tasks === 'unsolved' ? 'tasks the base model fails in context' : 'the first tasks of each split';
  process.stdout.write(`\n${result.table}\n(contexts = ${which}; questions = tasks x self-edits: ${size.evalSamples} per task in the self-edit conditions)\n\nrun directory: ${result.runDir} (ledger.jsonl, summary.json, plot.svg, policy/)   ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ conditions: result.summary.conditions.map((c) => ({ name: c.name, accuracy: c.accuracy, tasks: c.contexts, evaluations: c.questions })), run_dir: result.runDir })}\n`);
  }
  return 0;
}
