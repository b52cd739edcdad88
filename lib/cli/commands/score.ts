// `seal score` — mean negative log-likelihood of token sequences under a model (and adapter).
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { Model } from '../../model/model.js';
import { loadPeftAdapter } from '../../model/peft.js';
import { UsageError, type CliCommand } from '../command.js';

const USAGE = `usage: seal score --model DIR [--adapter DIR] --tokens ids.json [--device cpu|cuda] [--threads N] [--json]

  ids.json holds an array of token ids, or an array of such arrays (scored as separate sequences).
  Prints the mean negative log-likelihood in nats over all predicted positions and its perplexity;
  with --json: {"tokens": N, "nll": ..., "ppl": ...}.`;

function parseTokens(text: string, file: string): number[][] {
  let json: unknown;
  try { json = JSON.parse(text); } catch (err) { throw new UsageError(`${file}: invalid JSON (${(err as Error).message})`); }
  const isIds = (a: unknown): a is number[] => Array.isArray(a) && a.every((x) => Number.isInteger(x) && x >= 0);
  if (isIds(json) && json.length > 0) return [json];
  if (Array.isArray(json) && json.length > 0 && json.every(isIds)) return json as number[][];
  throw new UsageError(`${file}: expected an array of non-negative integer token ids or an array of such arrays`);
}

export const scoreCommand: CliCommand = {
  name: 'score',
  summary: 'mean negative log-likelihood (and perplexity) of token sequences',
  usage: USAGE,
  async run(argv) {
    const { values } = parseArgs({
      args: argv,
      options: { model: { type: 'string' }, adapter: { type: 'string' }, tokens: { type: 'string' }, device: { type: 'string', default: 'cpu' }, threads: { type: 'string' }, json: { type: 'boolean' } },
    });
    if (!values.model) throw new UsageError(`score: --model is required\n${USAGE}`);
    if (!values.tokens) throw new UsageError(`score: --tokens is required\n${USAGE}`);
    if (values.device !== 'cpu' && values.device !== 'cuda') throw new UsageError('score: --device must be cpu or cuda');
    if (values.threads !== undefined) {
      const { native } = await import('../../native.js');
      native().setThreads(Number(values.threads));
    }
    const seqs = parseTokens(await readFile(values.tokens, 'utf8'), values.tokens);
    if (seqs.some((s) => s.length < 2)) throw new UsageError(`${values.tokens}: every sequence needs at least 2 tokens (one to condition on, one to predict)`);
    const model = await Model.load(values.model, { device: values.device });
    try {
      const slot = values.adapter ? 0 : -1;
      if (values.adapter) await loadPeftAdapter(model, values.adapter, 0);
      const r = await model.score(seqs.map((tokens) => ({ tokens, slot })));
      const out = { tokens: r.tokens, nll: r.nll, ppl: Math.exp(r.nll) };
      process.stdout.write(values.json ? `${JSON.stringify(out)}\n` : `tokens ${out.tokens}   nll ${out.nll.toFixed(6)} nats   ppl ${out.ppl.toFixed(4)}\n`);
      return 0;
    } finally {
      await model.dispose();
    }
  },
};
