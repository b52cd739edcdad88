// `seal sft` — train a LoRA adapter on a JSONL file and save it in PEFT format.
import { parseArgs } from 'node:util';
import { Model } from '../../model/model.js';
import { PROJ_NAMES, type ProjName } from '../../model/native-model.js';
import { savePeftAdapter } from '../../model/peft.js';
import { readJsonl, tokenizeSftRow, trainAdapter } from '../../model/sft.js';
import { TextTokenizer } from '../../model/tokenizer.js';
import { UsageError, type CliCommand } from '../command.js';
import { progress } from '../progress.js';

const USAGE = `usage: seal sft --model DIR --data FILE.jsonl --out ADAPTER_DIR [--epochs N] [--lr X] [--batch-size B]
                [--rank R] [--alpha A] [--targets q_proj,v_proj,...] [--dropout P] [--rslora]
                [--schedule constant|linear|cosine] [--warmup STEPS] [--weight-decay W] [--max-grad-norm G]
                [--max-length T] [--all-tokens] [--seed S] [--device cpu|cuda] [--threads N] [--json]

  Rows: {"prompt": "...", "completion": "..."} (loss on completion tokens + EOS) or
  {"messages": [{"role", "content"}, ...]} (chat template; loss on assistant turns).
  --all-tokens trains on every token. Defaults: 3 epochs, lr 1e-4, batch 4, rank 16, alpha 32,
  all seven projections. The adapter is saved in PEFT format (adapter_config.json + safetensors).`;

export const sftCommand: CliCommand = {
  name: 'sft',
  summary: 'supervised fine-tuning of a LoRA adapter from JSONL, saved in PEFT format',
  usage: USAGE,
  async run(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        model: { type: 'string' }, data: { type: 'string' }, out: { type: 'string' }, epochs: { type: 'string', default: '3' },
        lr: { type: 'string', default: '1e-4' }, 'batch-size': { type: 'string', default: '4' }, rank: { type: 'string', default: '16' },
        alpha: { type: 'string', default: '32' }, targets: { type: 'string' }, dropout: { type: 'string', default: '0' },
        rslora: { type: 'boolean' }, schedule: { type: 'string', default: 'constant' }, warmup: { type: 'string', default: '0' },
        'weight-decay': { type: 'string', default: '0' }, 'max-grad-norm': { type: 'string', default: '1' }, 'max-length': { type: 'string' },
        'all-tokens': { type: 'boolean' }, seed: { type: 'string', default: '0' }, device: { type: 'string', default: 'cpu' },
        threads: { type: 'string' }, json: { type: 'boolean' },
      },
    });
    for (const req of ['model', 'data', 'out'] as const) if (!values[req]) throw new UsageError(`sft: --${req} is required\n${USAGE}`);
    const num = (name: string, v: string | undefined, ok: (x: number) => boolean, what: string) => {
      const x = Number(v);
      if (!ok(x)) throw new UsageError(`sft: --${name} must be ${what}, got '${v}'`);
      return x;
    };
    const int = (x: number) => Number.isInteger(x);
    const epochs = num('epochs', values.epochs, (x) => int(x) && x >= 1, 'a positive integer');
    const lr = num('lr', values.lr, (x) => x > 0, 'positive');
    const batchSize = num('batch-size', values['batch-size'], (x) => int(x) && x >= 1, 'a positive integer');
    const rank = num('rank', values.rank, (x) => int(x) && x >= 1, 'a positive integer');
    const alpha = num('alpha', values.alpha, (x) => x > 0, 'positive');
    const dropout = num('dropout', values.dropout, (x) => x >= 0 && x < 1, 'in [0, 1)');
    const warmup = num('warmup', values.warmup, (x) => int(x) && x >= 0, 'a non-negative integer');
    const weightDecay = num('weight-decay', values['weight-decay'], (x) => x >= 0, '>= 0');
    const maxGradNorm = num('max-grad-norm', values['max-grad-norm'], (x) => x >= 0, '>= 0');
    const seed = num('seed', values.seed, (x) => Number.isSafeInteger(x) && x >= 0, 'a non-negative integer');
    const maxLength = values['max-length'] === undefined ? undefined : num('max-length', values['max-length'], (x) => int(x) && x >= 2, 'an integer >= 2');
    const schedule = values.schedule;
    if (schedule !== 'constant' && schedule !== 'linear' && schedule !== 'cosine') throw new UsageError('sft: --schedule must be constant, linear or cosine');
    if (values.device !== 'cpu' && values.device !== 'cuda') throw new UsageError('sft: --device must be cpu or cuda');
    const targets = (values.targets ? values.targets.split(',').map((t) => t.trim()) : [...PROJ_NAMES]) as ProjName[];
    const unknown = targets.filter((t) => !PROJ_NAMES.includes(t));
    if (unknown.length) throw new UsageError(`sft: unknown --targets ${unknown.join(', ')} (${PROJ_NAMES.join(', ')})`);
    if (values.threads !== undefined) {
      const { native } = await import('../../native.js');
      native().setThreads(num('threads', values.threads, (x) => int(x) && x >= 1, 'a positive integer'));
    }

    const tok = await TextTokenizer.load(values.model!);
    const rows = await readJsonl(values.data!);
    const examples = rows.map((r) => tokenizeSftRow(r.value, tok, `${values.data}:${r.line}`, values['all-tokens'] ?? false));
    const model = await Model.load(values.model!, { device: values.device });
    try {
      model.createAdapter(0, { rank, alpha, targets, dropout, rslora: values.rslora ?? false, seed });
      const bar = values.json ? undefined : progress('sft', Math.ceil(examples.length / batchSize) * epochs, ['epoch', 'loss', 'tok/s']);
      const t0 = Date.now();
      let tokens = 0;
      const losses = await trainAdapter(model, 0, examples, {
        epochs, batchSize, lr, schedule, warmupSteps: warmup, weightDecay, maxGradNorm, seed, ...(maxLength ? { maxLength } : {}),
        onStep: (s) => {
          tokens += s.tokens;
          bar?.update(s.step, { epoch: s.epoch, loss: s.loss.toFixed(4), 'tok/s': Math.round(tokens / Math.max(1e-3, (Date.now() - t0) / 1000)) });
        },
      });
      bar?.stop();
      await savePeftAdapter(model, 0, values.out!, { baseModel: values.model! });
      const seconds = (Date.now() - t0) / 1000;
      const summary = { steps: losses.length, examples: examples.length, first_loss: losses[0], final_loss: losses.at(-1), tokens_per_s: tokens / seconds, seconds, out: values.out };
      process.stdout.write(values.json ? `${JSON.stringify(summary)}\n` : `saved ${values.out}: ${summary.steps} steps, loss ${summary.first_loss?.toFixed(4)} -> ${summary.final_loss?.toFixed(4)}, ${summary.tokens_per_s.toFixed(0)} tokens/s\n`);
      return 0;
    } finally {
      await model.dispose();
    }
  },
};
