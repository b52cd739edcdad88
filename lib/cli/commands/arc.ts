// `seal arc eval|rl` — the few-shot (ARC) experiments on SEAL's ARC files (reference §4), and
// `seal arc pretrain-toy` — pretraining of the toy few-shot model `seal demo arc` uses.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ARC_SPLITS, loadArcSplit, type ArcSplit, type ArcTask } from '../../domains/arc/data.js';
import {
  arcContexts, arcDomain, arcSelfEditPromptTokens, REFERENCE_ARC_INNER_LOOP, REFERENCE_FIXED_TTT, type ArcContext,
} from '../../domains/arc/domain.js';
import { SELF_EDIT_SAMPLING } from '../../domains/arc/self-edit-config.js';
import { DEFAULT_TOY_PRETRAIN, pretrainToyArc } from '../../domains/arc/toy-model.js';
import { flopsPerToken } from '../../bench/engine-bench.js';
import { readModelConfig } from '../../model/hf-config.js';
import { TextTokenizer } from '../../model/tokenizer.js';
import { runSeal, type SealConfig } from '../../seal/loop.js';
import type { SelfEditTraining } from '../../seal/domain.js';
import { UsageError, type CliCommand } from '../command.js';
import { progress, type Progress } from '../progress.js';

/**
 * The evaluation tasks the reference reports on (§4.1, §4.9: the 8 unique tasks of
 * `final_results.json`), as an explicit list instead of list positions and a NumPy shuffle (§7.6).
 * ce8d95cc is evaluated here with its own self-edits (the reference had none for it).
 */
export const REFERENCE_EVAL_TASKS = ['59341089', '66e6c45b', '68b67ca3', '903d1b4a', 'b1fc8b8e', 'bc4146bd', 'c7d4e6ad', 'ce8d95cc'] as const;

/** Self-edits per training task (§4.2: 15 for training). */
export const REFERENCE_SAMPLES = 15;
/** Self-edits the RL model writes per evaluation task (§4.8: `--n_self_edits_per_task 5`). */
export const REFERENCE_EVAL_SAMPLES = 5;

const SPLITS = Object.keys(ARC_SPLITS) as ArcSplit[];

const USAGE = `usage: seal arc eval --model DIR --data DIR [options]
       seal arc rl   --model DIR --data DIR [options]
       seal arc pretrain-toy --out DIR [--init DIR] [--steps N] [--seed S] [--lr X] [--warmup N] [--min-lr-ratio X]
                             [--save-at N,N,...] [--threads N] [--json]

  eval   no adaptation / fixed TTT / base self-edits on the evaluation tasks
  rl     the same, then ReST-EM rounds on the training tasks and "SEAL round r" evaluations
  pretrain-toy   pretrain the toy few-shot model from scratch, or (--init DIR) continue from a
                 model, one stage of scripts/build-toy-arc-model.sh (seal demo arc uses models/toy-arc)

  --data is the folder with SEAL's few-shot files (arc-agi_*_challenges.json / _solutions.json).

options:
  --split S         evaluation tasks: ${SPLITS.join(' | ')} (default evaluation-filtered)
  --tasks N         first N evaluation tasks (default: the reference's 8 evaluated tasks for
                    evaluation-filtered, ${REFERENCE_EVAL_TASKS.join(' ')}; all tasks otherwise)
  --train-split S   RL training tasks (rl; default training-filtered, all 12 tasks)
  --train-tasks N   first N training tasks (default all)
  --samples K       self-edits per training task per round (default ${REFERENCE_SAMPLES})
  --eval-samples K  self-edits per evaluation task in the self-edit conditions, each trained and
                    scored; accuracy is over (task, self-edit) pairs (default ${REFERENCE_EVAL_SAMPLES}, the reference's)
  --rounds R        ReST-EM rounds (rl; default 1, as the reference)
  --rank/--alpha    TTT LoRA shape (default the reference's ${REFERENCE_ARC_INNER_LOOP.rank} / ${REFERENCE_ARC_INNER_LOOP.alpha}, q/v/gate/down/up)
  --parse lenient|reference   self-edit JSON extraction (default lenient; reference: the whole
                    completion must be JSON)
  --run-dir DIR     where the run goes (default runs/arc-<time>)
  --resume DIR      continue a killed run from its ledger
  --seed S  --threads N  --dry-run  --json

  Self-edits: temperature ${SELF_EDIT_SAMPLING.temperature}, at most ${SELF_EDIT_SAMPLING.maxTokens} tokens. Fixed TTT: all four augmentation
  families, loss on outputs, lr 1e-4, 2 epochs. Reward: 1 when one of the two voted attempts solves
  each test input of the task, else 0. ReST-EM keeps every self-edit with reward 1 and
  fine-tunes the policy on them (LoRA r 16, alpha 16, lr 5e-5, 8 epochs, batch 5).`;

function splitArg(v: string | undefined, name: string, fallback: ArcSplit): ArcSplit {
  const s = v ?? fallback;
  if (!(SPLITS as string[]).includes(s)) throw new UsageError(`arc: --${name} must be one of ${SPLITS.join(', ')}, got '${s}'`);
  return s as ArcSplit;
}

/** The evaluation tasks of a split: the reference's 8 for evaluation-filtered, else all; then the first N. */
export function selectEvalTasks(tasks: readonly ArcTask[], split: ArcSplit, n?: number): ArcTask[] {
  let list = [...tasks];
  if (split === 'evaluation-filtered') {
    const byId = new Map(tasks.map((t) => [t.id, t]));
    const ref = REFERENCE_EVAL_TASKS.map((id) => byId.get(id)).filter((t): t is ArcTask => t !== undefined);
    if (ref.length === REFERENCE_EVAL_TASKS.length) list = ref;
  }
  return n === undefined ? list : list.slice(0, n);
}

/** The reference's SEAL configuration for ARC (§4.8), with the loop's names of the conditions. */
export function arcSealConfig(o: { seed: number; rounds: number; contexts: number; samples: number; evalSamples?: number }): SealConfig {
  return {
    seed: o.seed, rounds: o.rounds, contextsPerRound: o.contexts, samples: o.samples, evalSamples: o.evalSamples ?? REFERENCE_EVAL_SAMPLES, repeats: 1,
    // Rewards are 0/1; the reference keeps every self-edit with reward 1 (§4.8).
    filter: { kind: 'min-reward', min: 1 },
    sampling: { temperature: SELF_EDIT_SAMPLING.temperature, topP: 1 },
    policy: { rank: 16, alpha: 16, lr: 5e-5, epochs: 8, batchSize: 5 }, parallel: 8,
    baselines: { noAdaptation: true, baselineTraining: true, baseSelfEdits: true },
    names: { noAdaptation: 'no adaptation', baselineTraining: 'fixed TTT', baseSelfEdits: 'base self-edits', round: 'SEAL round {r}' },
  };
}

async function pretrainToy(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      out: { type: 'string' }, init: { type: 'string' }, steps: { type: 'string' }, seed: { type: 'string' }, threads: { type: 'string' }, lr: { type: 'string' },
      warmup: { type: 'string' }, 'min-lr-ratio': { type: 'string' }, 'save-at': { type: 'string' }, json: { type: 'boolean' },
    },
  });
  if (!values.out) throw new UsageError('arc pretrain-toy: --out is required');
  const D = DEFAULT_TOY_PRETRAIN;
  const num = (name: string, v: string | undefined, fallback: number, ok: (x: number) => boolean) => {
    if (v === undefined) return fallback;
    const x = Number(v);
    if (v.trim() === '' || !ok(x)) throw new UsageError(`arc pretrain-toy: bad --${name} '${v}'`);
    return x;
  };
  const steps = num('steps', values.steps, D.steps, (x) => Number.isInteger(x) && x >= 1);
  const seed = num('seed', values.seed, D.seed, (x) => Number.isSafeInteger(x) && x >= 0);
  const lr = num('lr', values.lr, D.lr, (x) => x > 0 && x < 1);
  const warmup = num('warmup', values.warmup, Math.min(D.warmup, Math.floor(steps / 10)), (x) => Number.isInteger(x) && x >= 0 && x < steps);
  const minLrRatio = num('min-lr-ratio', values['min-lr-ratio'], D.minLrRatio, (x) => x >= 0 && x <= 1);
  if (values.init !== undefined && !existsSync(join(values.init, 'model.safetensors'))) throw new UsageError(`arc pretrain-toy: --init ${values.init} has no model.safetensors`);
  const threads = values.threads === undefined ? undefined : num('threads', values.threads, 0, (x) => Number.isInteger(x) && x >= 1);
  const saveAt = (values['save-at'] ?? '').split(',').filter((x) => x.trim() !== '').map((x) => num('save-at', x, 0, (v) => Number.isInteger(v) && v >= 1));
  const bar = values.json ? undefined : progress('pretrain', steps, ['loss']);
  let smooth = NaN;
  const r = await pretrainToyArc({
    ...D, outDir: values.out, steps, seed, lr, warmup, minLrRatio, saveAt, ...(threads !== undefined ? { threads } : {}),
    ...(values.init !== undefined ? { init: values.init } : {}),
    onStep: (s) => {
      smooth = Number.isNaN(smooth) ? s.loss : 0.9 * smooth + 0.1 * s.loss;
      bar?.update(s.step, { loss: smooth.toFixed(3) });
    },
  });
  bar?.stop();
  const summary = { out: r.outDir, steps: r.steps, tokens: r.tokens, final_loss_mean_last_50: r.finalLossMean, seconds: r.seconds };
  process.stdout.write(values.json ? `${JSON.stringify(summary)}\n` : `saved ${r.outDir}: ${r.steps} steps, ${r.tokens} tokens, loss ${r.finalLossMean.toFixed(4)}, ${(r.seconds / 60).toFixed(1)} min\n`);
  return 0;
}

export const arcCommand: CliCommand = {
  name: 'arc',
  summary: 'few-shot ARC tasks: self-edits as TTT configurations, voting, SEAL ReST-EM rounds',
  usage: USAGE,
  async run(argv) {
    if (argv[0] === 'pretrain-toy') return pretrainToy(argv.slice(1));
    const { values, positionals } = parseArgs({
      args: argv, allowPositionals: true,
      options: {
        model: { type: 'string' }, data: { type: 'string' }, split: { type: 'string' }, tasks: { type: 'string' },
        'train-split': { type: 'string' }, 'train-tasks': { type: 'string' }, samples: { type: 'string' }, 'eval-samples': { type: 'string' }, rounds: { type: 'string' },
        rank: { type: 'string' }, alpha: { type: 'string' }, parse: { type: 'string', default: 'lenient' },
        'run-dir': { type: 'string' }, resume: { type: 'string' }, seed: { type: 'string', default: '0' }, threads: { type: 'string' },
        'dry-run': { type: 'boolean' }, json: { type: 'boolean' },
      },
    });
    const mode = positionals[0];
    if (mode !== 'eval' && mode !== 'rl') throw new UsageError(`arc: expected 'eval', 'rl' or 'pretrain-toy'\n${USAGE}`);
    if (!values.model) throw new UsageError('arc: --model is required');
    if (!values.data) throw new UsageError('arc: --data is required (the folder with the arc-agi_*.json files)');
    const int = (name: string, v: string | undefined, min: number): number => {
      const n = Number(v);
      if (v === undefined || v.trim() === '' || !Number.isInteger(n) || n < min) throw new UsageError(`arc: --${name} must be an integer >= ${min}, got '${v}'`);
      return n;
    };
    const parseMode = values.parse;
    if (parseMode !== 'lenient' && parseMode !== 'reference') throw new UsageError(`arc: --parse must be lenient or reference`);
    if (values.threads !== undefined) (await import('../../native.js')).native().setThreads(int('threads', values.threads, 1));
    // Every argument is checked before the data is read.
    const samples = int('samples', values.samples ?? String(REFERENCE_SAMPLES), 1);
    const evalSamples = int('eval-samples', values['eval-samples'] ?? String(REFERENCE_EVAL_SAMPLES), 1);
    const split = splitArg(values.split, 'split', 'evaluation-filtered');
    const trainSplit = splitArg(values['train-split'], 'train-split', 'training-filtered');
    const evalTasks = selectEvalTasks(await loadArcSplit(values.data, split), split, values.tasks === undefined ? undefined : int('tasks', values.tasks, 1));
    let trainTasks: ArcTask[] = [];
    if (mode === 'rl') {
      trainTasks = await loadArcSplit(values.data, trainSplit);
      if (values['train-tasks'] !== undefined) trainTasks = trainTasks.slice(0, int('train-tasks', values['train-tasks'], 1));
    }
    const rounds = mode === 'rl' ? int('rounds', values.rounds ?? '1', 1) : 0;
    const seed = int('seed', values.seed, 0);
    const inner = {
      ...(values.rank !== undefined ? { rank: int('rank', values.rank, 1) } : {}),
      ...(values.alpha !== undefined ? { alpha: Number(values.alpha) } : {}),
    };
    if (inner.alpha !== undefined && !(inner.alpha > 0)) throw new UsageError('arc: --alpha must be positive');
    const tok = await TextTokenizer.load(values.model);
    const domain = arcDomain({ inner, seed, parseMode });
    const evalContexts = arcContexts(evalTasks);
    const trainContexts = arcContexts(trainTasks);
    const config = arcSealConfig({ seed, rounds, contexts: trainContexts.length, samples, evalSamples });

    if (values['dry-run']) {
      const modelConfig = await readModelConfig(values.model);
      const rank = inner.rank ?? REFERENCE_ARC_INNER_LOOP.rank;
      // The fixed configuration's TTT sets, built exactly as the run would build them.
      const fixed = evalContexts.map((c) => domain.baselineTraining(c, tok));
      const fixedTokens = fixed.map((t: SelfEditTraining) => (t.ok ? t.examples.reduce((a, e) => a + e.tokens.length, 0) * t.config.epochs : 0));
      const fixedExamples = fixed.map((t) => (t.ok ? t.examples.length : 0));
      const promptTokens = (cs: ArcContext[]) => cs.map((c) => arcSelfEditPromptTokens(tok, c.train).length);
      const subtasks = evalTasks.reduce((a, t) => a + t.test.length, 0);
      // No adaptation is not an inner run; fixed TTT once per task; base self-edits and each round's SEAL evalSamples per task.
      const innerRuns = evalContexts.length * (1 + evalSamples * (1 + rounds)) + rounds * trainContexts.length * samples;
      const meanFixed = fixedTokens.length ? fixedTokens.reduce((a, b) => a + b, 0) / fixedTokens.length : 0;
      const trainTokens = Math.round(meanFixed * innerRuns);
      const generated = samples * rounds * trainContexts.length * SELF_EDIT_SAMPLING.maxTokens + (1 + rounds) * evalContexts.length * evalSamples * SELF_EDIT_SAMPLING.maxTokens;
      const seconds = Math.round((trainTokens * flopsPerToken(modelConfig, 2048, 'train', rank) + generated * flopsPerToken(modelConfig, 2048, 'forward', 0)) / 100e9);
      const out = {
        mode, split, tasks: evalTasks.length, task_ids: evalTasks.map((t) => t.id), subtasks,
        train_split: mode === 'rl' ? trainSplit : null, train_tasks: trainTasks.length, rounds, samples, eval_samples: evalSamples, inner_runs: innerRuns,
        fixed_ttt: { config: REFERENCE_FIXED_TTT, examples: fixedExamples, tokens_trained: fixedTokens },
        self_edit_prompt_tokens: promptTokens(evalContexts),
        train_tokens: trainTokens, generated_self_edit_tokens: generated, estimated_seconds: seconds,
      };
      if (values.json) process.stdout.write(`${JSON.stringify(out)}\n`);
      else {
        process.stdout.write(`dry run (${mode}): ${evalTasks.length} evaluation tasks of ${split} (${subtasks} test inputs): ${out.task_ids.join(' ')}\n` +
          (mode === 'rl' ? `  ${trainTasks.length} training tasks of ${trainSplit} x ${samples} self-edits x ${rounds} round(s)\n` : '') +
          `  ${innerRuns} inner-loop runs; fixed TTT sets: ${fixedExamples.join(' ')} examples\n` +
          `  ~${trainTokens.toLocaleString()} tokens trained (each run as large as the fixed configuration's), ~${seconds.toLocaleString()} s at 100 GFLOP/s\n`);
      }
      return 0;
    }

    const runDir = values.resume ?? values['run-dir'] ?? join('runs', `arc-${new Date().toISOString().replace(/[:.]/g, '-')}`);
    mkdirSync(runDir, { recursive: true });
    let bar: Progress | undefined;
    let stage = '';
    const result = await runSeal({
      runDir, modelDir: values.model, tokenizer: tok, domain, trainContexts, evalContexts, config,
      onProgress: (p) => {
        if (p.stage !== stage) { bar?.stop(); stage = p.stage; bar = progress(p.stage, p.total, ['detail']); }
        bar?.update(p.done, { detail: p.detail ?? '' });
      },
    });
    bar?.stop();
    process.stdout.write(`${result.table}\n(questions = tasks x self-edits (${evalSamples} per task in the self-edit conditions): a task counts when every test input is solved by one of two voted attempts)\n\nrun directory: ${result.runDir}\n`);
    if (values.json) {
      process.stdout.write(`${JSON.stringify({ conditions: result.summary.conditions.map((c) => ({ name: c.name, accuracy: c.accuracy, tasks: c.contexts, evaluations: c.questions, invalid_self_edits: c.invalidSelfEdits })), run_dir: result.runDir })}\n`);
    }
    return 0;
  },
};
