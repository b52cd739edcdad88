// `seal demo` — SEAL end to end on the embedded toy world and the model the project pretrained
// itself (models/toyworld): no adaptation, passage-only fine-tuning, base-model self-edits, and
// SEAL after ReST-EM rounds 1 and 2, on held-out passages, with a paper-style table and a plot.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { toyworldContexts, toyworldDomain } from '../../domains/toyworld/domain.js';
import { formatStyleReport, styleReport } from '../../domains/toyworld/style-report.js';
import type { LedgerEntry } from '../../seal/ledger.js';
import { TextTokenizer } from '../../model/tokenizer.js';
import { runSeal, type SealConfig } from '../../seal/loop.js';
import { accuracySvg } from '../../seal/plot.js';
import { UsageError, type CliCommand } from '../command.js';
import { ARC_DEMO_USAGE } from './arc-demo.js';
import { progress, type Progress } from '../progress.js';

const MODEL_DIR = fileURLToPath(new URL('../../../models/toyworld/', import.meta.url));

const USAGE = `usage: seal demo [--quick] [--run-dir DIR] [--resume DIR] [--seed S] [--threads N] [--model DIR] [--json]

  Runs SEAL on the embedded toy world with the embedded model (models/toyworld), on held-out
  passages the model never saw: no adaptation, passage only, base self-edits, SEAL round 1 and
  round 2 (ReST-EM on separate RL-training passages). Prints the results table and the
  self-edit styles the policy writes per condition; writes the run directory (config, ledger,
  summary, styles.json, policy checkpoints and adapters, plot.svg).
  --quick   a smaller run for tests (fewer passages and samples)
  --model   another toy-world model directory (e.g. one built by seal pretrain); default models/toyworld
  --json    last line: {"conditions": [{"name", "accuracy", "ci95", "questions"}], "run_dir": ...}

  seal demo arc [--help]: the few-shot (ARC) experiment on the toy few-shot family (models/toy-arc).`;

/** Sizes of the full demo and of --quick (kept within ~10 and ~2 minutes on a 2-core laptop). */
export const DEMO_SIZES = {
  full: { evalPassages: 60, contextsPerRound: 64, samples: 8, repeats: 1 },
  quick: { evalPassages: 12, contextsPerRound: 6, samples: 3, repeats: 1 },
};

export function demoConfig(quick: boolean, seed: number): SealConfig {
  const size = quick ? DEMO_SIZES.quick : DEMO_SIZES.full;
  return {
    seed, rounds: 2, contextsPerRound: size.contextsPerRound, samples: size.samples, repeats: size.repeats,
    filter: { kind: 'best-of-k' }, sampling: { temperature: 1, topP: 0.95 },
    policy: { rank: 16, alpha: 32, lr: 1e-3, epochs: 3, batchSize: 4 }, parallel: 16,
    baselines: { noAdaptation: true, baselineTraining: true, baseSelfEdits: true },
    names: { noAdaptation: 'no adaptation', baselineTraining: 'passage only', baseSelfEdits: 'base self-edits', round: 'SEAL round {r}' },
  };
}

export const demoCommand: CliCommand = {
  name: 'demo',
  summary: 'SEAL end to end on the embedded toy world and model (minutes on a CPU)',
  usage: USAGE,
  subUsage: { arc: ARC_DEMO_USAGE },
  async run(argv) {
    if (argv[0] === 'arc') return (await import('./arc-demo.js')).arcDemo(argv.slice(1));
    const { values } = parseArgs({
      args: argv,
      options: { quick: { type: 'boolean' }, 'run-dir': { type: 'string' }, resume: { type: 'string' }, seed: { type: 'string', default: '0' }, threads: { type: 'string' }, model: { type: 'string' }, json: { type: 'boolean' } },
    });
    const modelDir = values.model ?? MODEL_DIR;
    if (!existsSync(join(modelDir, 'model.safetensors'))) {
      throw new UsageError(values.model ? `demo: no model.safetensors in ${modelDir}` : `demo: the embedded model is missing (${MODEL_DIR}); rebuild it with scripts/build-toyworld-model.sh`);
    }
    const seed = Number(values.seed);
    if (!Number.isSafeInteger(seed) || seed < 0) throw new UsageError(`demo: --seed must be a non-negative integer`);
    if (values.threads !== undefined) (await import('../../native.js')).native().setThreads(Number(values.threads));
    const quick = values.quick ?? false;
    const config = demoConfig(quick, seed);
    const size = quick ? DEMO_SIZES.quick : DEMO_SIZES.full;
    const runDir = values.resume ?? values['run-dir'] ?? join('runs', `demo-${new Date().toISOString().replace(/[:.]/g, '-')}`);
    const tok = await TextTokenizer.load(modelDir);
    const evalContexts = toyworldContexts('eval', size.evalPassages);
    let bar: Progress | undefined;
    let stage = '';
    const t0 = Date.now();
    const result = await runSeal({
      runDir, modelDir, tokenizer: tok, domain: toyworldDomain(),
      trainContexts: toyworldContexts('rl'), evalContexts, config,
      onProgress: (p) => {
        if (p.stage !== stage) { bar?.stop(); stage = p.stage; bar = progress(p.stage.padEnd(34), p.total, ['detail']); }
        bar?.update(p.done, { detail: p.detail ?? '' });
      },
    });
    bar?.stop();
    writeFileSync(join(result.runDir, 'plot.svg'), accuracySvg(result.summary.conditions, `SEAL on the toy world (${quick ? 'quick' : 'full'} demo)`));
    // What the policy writes before and after ReST-EM (styles.json holds the same numbers).
    const ledger = readFileSync(join(result.runDir, 'ledger.jsonl'), 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as LedgerEntry);
    const styles = styleReport(ledger, new Map(evalContexts.map((c) => [c.id, c])));
    writeFileSync(join(result.runDir, 'styles.json'), `${JSON.stringify(styles, null, 2)}\n`);
    process.stdout.write(`\n${result.table}\n\n${formatStyleReport(styles)}\n\nrun directory: ${result.runDir} (ledger.jsonl, summary.json, styles.json, plot.svg, policy/)   ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
    if (values.json) {
      process.stdout.write(`${JSON.stringify({ conditions: result.summary.conditions.map((c) => ({ name: c.name, accuracy: c.accuracy, ci95: c.ci95, questions: c.questions })), run_dir: result.runDir })}\n`);
    }
    return 0;
  },
};
