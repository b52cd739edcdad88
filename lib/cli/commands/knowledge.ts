// `seal knowledge eval|rl` — the knowledge-incorporation experiments on SEAL's SQuAD files.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { knowledgeContexts, knowledgeDomain, REFERENCE_INNER_LOOP } from '../../domains/knowledge/domain.js';
import { selectEvalPassages } from '../../domains/knowledge/eval-selection.js';
import { ExactMatchJudge, F1ThresholdJudge, OpenAICompatibleJudge, type Judge } from '../../domains/knowledge/judges.js';
import { LocalModelJudge } from '../../domains/knowledge/local-judge.js';
import { isSelfEditVariant, SELF_EDIT_VARIANTS, selfEditPrompt } from '../../domains/knowledge/prompts.js';
import { loadSquadFile, type SquadPassage } from '../../domains/knowledge/squad-data.js';
import { readModelConfig } from '../../model/hf-config.js';
import { Model } from '../../model/model.js';
import { TextTokenizer } from '../../model/tokenizer.js';
import { estimateWork } from '../../seal/estimate.js';
import { runContinual } from '../../seal/continual.js';
import { runCpt } from '../../seal/cpt.js';
import { runSeal, type SealConfig } from '../../seal/loop.js';
import { UsageError, type CliCommand } from '../command.js';
import { progress, type Progress } from '../progress.js';

const USAGE = `usage: seal knowledge eval --model DIR --data squad_val.json [options]
       seal knowledge rl   --model DIR --data squad_val.json --train-data squad_train.json [options]
       seal knowledge cpt  --model DIR --data squad_val.json [--samples K] [--epochs 3 --lr 1e-3 --batch 8]
       seal knowledge continual --model DIR --data squad_val.json [--steps 8] [--sequences 8]

  eval   no adaptation / passage only / base-model self-edits on the evaluation passages
         (default: the reference's 200 passages of squad_val.json, Appendix A)
  rl     the same, then ReST-EM rounds on training passages and "SEAL round r" evaluations
  cpt    continued pretraining: one LoRA on the self-edits of all evaluation passages (K per
         passage; --samples 0 = passages only), scored on all their questions (§2)
  continual  sequential self-edits merged one after another; accuracy matrix and forgetting (§3)

options:
  --passages N            evaluation passages (first N of the reference's order; default 200)
  --variant V             self-edit prompt: ${SELF_EDIT_VARIANTS.join(', ')} (default implications)
  --judge J               exact | f1[:T] (token F1 >= T, default 0.5) | local:MODEL_DIR | openai (default exact)
  --judge-model NAME      model name for --judge openai (default gpt-4.1)
  --judge-base-url URL    API root for --judge openai; key from --judge-key-env (default OPENAI_API_KEY)
  --rounds R              ReST-EM rounds (rl; default 2)
  --contexts N            training passages per round (default 50)
  --samples K             self-edits per passage (default 5)
  --repeats R             inner-loop repeats per self-edit (default 3)
  --filter best|threshold[:MARGIN]   keep the best self-edit per passage (default) or all beating no adaptation
  --epochs/--lr/--rank/--alpha      inner loop (defaults: reference 10 / 1e-3 / 32 / 64, q/v)
  --loss-on-padding T     reproduce the reference's loss on EOS padding up to T tokens (off by default)
  --self-edit-tokens N    longest self-edit (default 1024)
  --run-dir DIR           where the run goes (default runs/knowledge-<time>)
  --resume DIR            continue a killed run from its ledger
  --seed S  --threads N  --dry-run  --json`;

export const knowledgeCommand: CliCommand = {
  name: 'knowledge',
  summary: 'knowledge incorporation (SQuAD): evaluate self-edits, run SEAL ReST-EM rounds',
  usage: USAGE,
  async run(argv) {
    const { values, positionals } = parseArgs({
      args: argv, allowPositionals: true,
      options: {
        model: { type: 'string' }, data: { type: 'string' }, 'train-data': { type: 'string' }, passages: { type: 'string', default: '200' },
        variant: { type: 'string', default: 'implications' }, judge: { type: 'string', default: 'exact' }, 'judge-model': { type: 'string' },
        'judge-base-url': { type: 'string' }, 'judge-key-env': { type: 'string' }, rounds: { type: 'string', default: '2' },
        contexts: { type: 'string', default: '50' }, samples: { type: 'string', default: '5' }, repeats: { type: 'string', default: '3' },
        filter: { type: 'string', default: 'best' }, epochs: { type: 'string' }, lr: { type: 'string' }, rank: { type: 'string' }, alpha: { type: 'string' },
        'loss-on-padding': { type: 'string' }, 'self-edit-tokens': { type: 'string', default: '1024' }, 'run-dir': { type: 'string' },
        resume: { type: 'string' }, seed: { type: 'string', default: '0' }, threads: { type: 'string' }, 'dry-run': { type: 'boolean' }, json: { type: 'boolean' },
        batch: { type: 'string' }, steps: { type: 'string', default: '8' }, sequences: { type: 'string', default: '8' },
      },
    });
    const mode = positionals[0];
    if (mode !== 'eval' && mode !== 'rl' && mode !== 'cpt' && mode !== 'continual') throw new UsageError(`knowledge: expected 'eval', 'rl', 'cpt' or 'continual'\n${USAGE}`);
    if (!values.model) throw new UsageError('knowledge: --model is required');
    if (!values.data) throw new UsageError('knowledge: --data is required (squad_val.json)');
    if (mode === 'rl' && !values['train-data']) throw new UsageError('knowledge rl: --train-data is required (squad_train.json)');
    const int = (name: string, v: string | undefined, min: number) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < min) throw new UsageError(`knowledge: --${name} must be an integer >= ${min}, got '${v}'`);
      return n;
    };
    const variant = values.variant ?? 'implications';
    if (!isSelfEditVariant(variant)) throw new UsageError(`knowledge: unknown --variant '${variant}' (${SELF_EDIT_VARIANTS.join(', ')})`);
    let filter: SealConfig['filter'] = { kind: 'best-of-k' };
    if (values.filter?.startsWith('threshold')) filter = { kind: 'threshold', margin: Number(values.filter.split(':')[1] ?? 0) };
    else if (values.filter !== 'best') throw new UsageError(`knowledge: --filter must be best or threshold[:MARGIN]`);
    if (values.threads !== undefined) (await import('../../native.js')).native().setThreads(int('threads', values.threads, 1));

    const evalPassages = selectEvalPassages(await loadSquadFile(values.data), { count: int('passages', values.passages, 1) });
    const trainPassages: SquadPassage[] = mode === 'rl' ? await loadSquadFile(values['train-data']!) : [];
    const tok = await TextTokenizer.load(values.model);
    const inner = {
      ...REFERENCE_INNER_LOOP,
      ...(values.epochs ? { epochs: int('epochs', values.epochs, 1) } : {}),
      ...(values.lr ? { lr: Number(values.lr) } : {}),
      ...(values.rank ? { rank: int('rank', values.rank, 1) } : {}),
      ...(values.alpha ? { alpha: Number(values.alpha) } : {}),
    };
    const rounds = mode === 'rl' ? int('rounds', values.rounds, 1) : 0;
    const config: SealConfig = {
      seed: int('seed', values.seed, 0), rounds, contextsPerRound: int('contexts', values.contexts, 1), samples: int('samples', values.samples, 1),
      repeats: int('repeats', values.repeats, 1), filter, sampling: { temperature: 1, topP: 0.95 },
      policy: { rank: 64, alpha: 128, lr: 3e-4, epochs: 2, batchSize: 10 }, parallel: 8,
      baselines: { noAdaptation: true, baselineTraining: true, baseSelfEdits: true },
      names: { noAdaptation: 'no adaptation', baselineTraining: 'passage only', baseSelfEdits: 'base self-edits', round: 'SEAL round {r}' },
    };
    const selfEditTokens = int('self-edit-tokens', values['self-edit-tokens'], 16);

    if (mode === 'cpt' || mode === 'continual') {
      if (values['dry-run']) throw new UsageError(`knowledge ${mode}: --dry-run is available for eval and rl`);
      const runDir = values['run-dir'] ?? join('runs', `knowledge-${mode}-${new Date().toISOString().replace(/[:.]/g, '-')}`);
      mkdirSync(runDir, { recursive: true });
      // §2: split_newlines off, 3 epochs, lr 1e-3, batch 4 x grad-accum 2; §3: the single-passage inner loop.
      const cptInner = { ...inner, epochs: values.epochs ? inner.epochs : 3, batchSize: values.batch ? int('batch', values.batch, 1) : 8 };
      const judge = new ExactMatchJudge();
      const domain = knowledgeDomain({ variant, judge, inner: mode === 'cpt' ? cptInner : inner, selfEditMaxTokens: selfEditTokens, splitNewlines: mode !== 'cpt' });
      const model = await Model.load(values.model);
      let bar: Progress | undefined;
      let stage = '';
      const onProgress = (st: string, done: number, total: number) => {
        if (st !== stage) { bar?.stop(); stage = st; bar = progress(st, total, ['step']); }
        bar?.update(done, { step: done });
      };
      try {
        if (mode === 'cpt') {
          const samples = int('samples', values.samples, 0);
          const r = await runCpt({ model, tokenizer: tok, domain, contexts: knowledgeContexts(evalPassages, 'val'), samples, sampling: { temperature: 1, topP: 0.95 }, inner: cptInner, seed: config.seed, onProgress });
          bar?.stop();
          writeFileSync(join(runDir, 'results.json'), `${JSON.stringify(r, null, 2)}\n`);
          process.stdout.write(`continued pretraining on ${evalPassages.length} passages (${samples} self-edits each, ${r.sequences} sequences, ${r.steps} steps)\n` +
            `  no adaptation ${(100 * r.baseline.accuracy).toFixed(1)}%   adapted ${(100 * r.adapted.accuracy).toFixed(1)}%   (${r.adapted.total} questions, exact match)\nrun directory: ${runDir}\n`);
          if (values.json) process.stdout.write(`${JSON.stringify({ baseline: r.baseline, adapted: r.adapted, sequences: r.sequences, run_dir: runDir })}\n`);
        } else {
          await model.dispose();
          const all = await loadSquadFile(values.data);
          const r = await runContinual({ modelDir: values.model, tokenizer: tok, domain, pool: knowledgeContexts(all, 'val'), steps: int('steps', values.steps, 1), sequences: int('sequences', values.sequences, 1), sampling: { temperature: 1, topP: 0.95 }, seed: config.seed, onProgress });
          bar?.stop();
          writeFileSync(join(runDir, 'results.json'), `${JSON.stringify(r, null, 2)}\n`);
          const fmt = (v: number | null) => (v === null ? '    .' : (100 * v).toFixed(1).padStart(5));
          process.stdout.write(`mean accuracy (%) after r edits (rows) on the r-th context (columns):\n${r.mean.map((row, i) => `  ${String(i).padStart(2)} ${row.map(fmt).join(' ')}`).join('\n')}\n` +
            `first context: ${(100 * r.forgetting.firstAfterOwnEdit).toFixed(1)}% after its edit -> ${(100 * r.forgetting.firstAfterAll).toFixed(1)}% after all; row 0 mean ${(100 * r.forgetting.rowZeroMean).toFixed(1)}%, last row ${(100 * r.forgetting.lastRowMean).toFixed(1)}%\nrun directory: ${runDir}\n`);
          if (values.json) process.stdout.write(`${JSON.stringify({ mean: r.mean, forgetting: r.forgetting, run_dir: runDir })}\n`);
        }
        return 0;
      } finally {
        await model.dispose();
      }
    }

    if (values['dry-run']) {
      const modelConfig = await readModelConfig(values.model);
      const stats = (ps: SquadPassage[]) => ps.map((p) => ({ passageTokens: tok.encode(selfEditPrompt(variant, p)).length, questions: p.questions.length }));
      const est = estimateWork({
        config: modelConfig, evalContexts: stats(evalPassages), trainContexts: stats(trainPassages), rounds, contextsPerRound: config.contextsPerRound,
        samples: config.samples, repeats: config.repeats, trainingEvalConditions: 2 + rounds, selfEditConditions: 1 + rounds,
        epochs: inner.epochs, rank: inner.rank, answerTokens: 64, selfEditTokens, gflops: 100,
      });
      if (values.json) {
        const { assumptions: _a, ...numbers } = est;
        process.stdout.write(`${JSON.stringify(numbers)}\n`);
      } else {
        process.stdout.write(`dry run (${mode}): ${est.contexts} contexts, ${est.questions} evaluation questions, ${est.inner_runs} inner-loop runs\n` +
          `  ~${est.train_tokens.toLocaleString()} tokens trained, ~${est.generated_tokens.toLocaleString()} generated, ~${est.estimated_seconds.toLocaleString()} s\n` +
          `  assumptions: ${est.assumptions.join('; ')}\n`);
      }
      return 0;
    }

    const runDir = values.resume ?? values['run-dir'] ?? join('runs', `knowledge-${new Date().toISOString().replace(/[:.]/g, '-')}`);
    mkdirSync(runDir, { recursive: true });
    let judge: Judge;
    let judgeModel: Model | undefined;
    const j = values.judge ?? 'exact';
    if (j === 'exact') judge = new ExactMatchJudge();
    else if (j === 'f1' || j.startsWith('f1:')) {
      const threshold = j === 'f1' ? 0.5 : Number(j.slice(3));
      if (!(threshold > 0 && threshold <= 1)) throw new UsageError(`knowledge: --judge f1:T needs T in (0, 1]`);
      judge = new F1ThresholdJudge({ threshold });
    }
    else if (j.startsWith('local:')) {
      const dir = j.slice('local:'.length);
      judgeModel = await Model.load(dir, { storage: 'bf16' });
      judge = new LocalModelJudge(judgeModel, await TextTokenizer.load(dir));
    } else if (j === 'openai') {
      // Verdicts are cached in the run directory, so a resumed run does not ask again.
      judge = new OpenAICompatibleJudge({
        ...(values['judge-model'] ? { model: values['judge-model'] } : {}), ...(values['judge-base-url'] ? { baseUrl: values['judge-base-url'] } : {}),
        ...(values['judge-key-env'] ? { apiKeyEnv: values['judge-key-env'] } : {}), cachePath: join(runDir, 'judge-cache.jsonl'),
      });
    } else throw new UsageError(`knowledge: --judge must be exact, f1, local:DIR or openai`);
    let bar: Progress | undefined;
    let stage = '';
    try {
      const result = await runSeal({
        runDir, modelDir: values.model, tokenizer: tok,
        domain: knowledgeDomain({ variant, judge, inner, selfEditMaxTokens: selfEditTokens, ...(values['loss-on-padding'] ? { lossOnPaddingTo: int('loss-on-padding', values['loss-on-padding'], 2) } : {}) }),
        trainContexts: knowledgeContexts(trainPassages, 'train'), evalContexts: knowledgeContexts(evalPassages, 'val'), config,
        onProgress: (p) => {
          if (p.stage !== stage) { bar?.stop(); stage = p.stage; bar = progress(p.stage, p.total, ['detail']); }
          bar?.update(p.done, { detail: p.detail ?? '' });
        },
      });
      bar?.stop();
      process.stdout.write(`${result.table}\n\nrun directory: ${result.runDir}\n`);
      if (values.json) process.stdout.write(`${JSON.stringify({ conditions: result.summary.conditions.map((c) => ({ name: c.name, accuracy: c.accuracy, ci95: c.ci95, questions: c.questions, context_mean: c.contextMean })), run_dir: result.runDir })}\n`);
      return 0;
    } finally {
      await judgeModel?.dispose();
    }
  },
};
