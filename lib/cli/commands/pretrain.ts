// `seal pretrain` — pretrain the embedded toy-world model from random weights (all parameters):
// builds the pretraining world, corpus and tokenizer, trains, checkpoints, and writes a Hugging Face
// directory with training.json. scripts/build-toyworld-model.sh runs it with the committed recipe.
import { parseArgs } from 'node:util';
import { DEFAULT_PRETRAIN, pretrain } from '../../domains/toyworld/pretrain.js';
import { UsageError, type CliCommand } from '../command.js';
import { progress } from '../progress.js';

const D = DEFAULT_PRETRAIN;
const USAGE = `usage: seal pretrain --out DIR [--seed S] [--steps N] [--batch TOKENS] [--seq T] [--lr X] [--warmup N]
                     [--checkpoint-every N] [--threads N] [--resume CHECKPOINT_DIR] [--json]

  Pretrains the embedded toy-world model (a small Llama, full-parameter AdamW; linear warmup, the
  peak rate for ${Math.round(D.stableFraction * 100)}% of the steps, then cosine decay to ${D.minLrRatio} × lr) on a corpus generated
  from the pretraining world (lib/domains/toyworld/corpus.ts), and writes DIR as a
  Hugging Face model directory: config.json, model.safetensors, tokenizer.json,
  tokenizer_config.json, generation_config.json and training.json (recipe, final loss, wall time,
  machine). Checkpoints go to DIR/checkpoints/step-N (the newest two are kept).

  Defaults: seed ${D.seed}, ${D.steps} steps of ~${D.batchTokens} tokens, documents up to ${D.maxSeq} tokens, lr ${D.lr}
  (warmup ${D.warmup}), checkpoint every ${D.checkpointEvery} steps. The same seed and --threads give the same model.
  --resume continues from a checkpoint: weights and step are restored, AdamW's moments are not
  (they restart, with a short re-warmup), so the result is close to but not bit-identical with an
  uninterrupted run.`;

export const pretrainCommand: CliCommand = {
  name: 'pretrain',
  summary: 'pretrain the embedded toy-world model from scratch (full-parameter, checkpoints)',
  usage: USAGE,
  async run(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        out: { type: 'string' }, seed: { type: 'string' }, steps: { type: 'string' }, batch: { type: 'string' }, seq: { type: 'string' },
        lr: { type: 'string' }, warmup: { type: 'string' }, 'checkpoint-every': { type: 'string' }, threads: { type: 'string' },
        resume: { type: 'string' }, json: { type: 'boolean' },
      },
    });
    if (!values.out) throw new UsageError(`pretrain: --out is required\n${USAGE}`);
    const num = (name: string, v: string | undefined, fallback: number, ok: (x: number) => boolean, what: string): number => {
      if (v === undefined) return fallback;
      const x = Number(v);
      if (v.trim() === '' || !ok(x)) throw new UsageError(`pretrain: --${name} must be ${what}, got '${v}'`);
      return x;
    };
    const int = (x: number): boolean => Number.isInteger(x);
    const seed = num('seed', values.seed, D.seed, (x) => Number.isSafeInteger(x) && x >= 0, 'a non-negative integer');
    const steps = num('steps', values.steps, D.steps, (x) => int(x) && x >= 1, 'a positive integer');
    const batchTokens = num('batch', values.batch, D.batchTokens, (x) => int(x) && x >= 16, 'an integer >= 16 (tokens per step)');
    const maxSeq = num('seq', values.seq, D.maxSeq, (x) => int(x) && x >= 64 && x <= 512, 'an integer in [64, 512]');
    const lr = num('lr', values.lr, D.lr, (x) => x > 0 && x < 1, 'in (0, 1)');
    const warmup = num('warmup', values.warmup, Math.min(D.warmup, Math.floor(steps / 10)), (x) => int(x) && x >= 0, 'a non-negative integer');
    const checkpointEvery = num('checkpoint-every', values['checkpoint-every'], D.checkpointEvery, (x) => int(x) && x >= 0, 'a non-negative integer');
    const threads = values.threads === undefined ? undefined : num('threads', values.threads, 0, (x) => int(x) && x >= 1, 'a positive integer');

    const bar = values.json ? undefined : progress('pretrain', steps, ['loss', 'tok/s']);
    let smooth = NaN;
    const result = await pretrain({
      ...D, outDir: values.out, seed, steps, batchTokens, maxSeq, lr, warmup, checkpointEvery,
      ...(threads !== undefined ? { threads } : {}), ...(values.resume ? { resumeDir: values.resume } : {}),
      onStep: (s) => {
        smooth = Number.isNaN(smooth) ? s.loss : 0.9 * smooth + 0.1 * s.loss;
        bar?.update(s.step, { loss: smooth.toFixed(3), 'tok/s': Math.round(s.tokens / Math.max(1e-3, s.seconds)) });
      },
      onCheckpoint: (dir, step) => { if (!bar) process.stderr.write(`checkpoint ${dir} (step ${step})\n`); },
    });
    bar?.stop();
    const summary = { out: result.outDir, steps: result.steps, resumed_from: result.startStep || null, final_loss: result.finalLoss, final_loss_mean_last_50: result.finalLossMean, tokens: result.tokens, seconds: result.seconds };
    process.stdout.write(values.json
      ? `${JSON.stringify(summary)}\n`
      : `saved ${result.outDir}: ${result.steps} steps, ${result.tokens} tokens, loss ${result.finalLossMean.toFixed(4)} (mean of the last 50 steps), ${(result.seconds / 60).toFixed(1)} min\n`);
    return 0;
  },
};
