// `seal generate` — sample continuations from a model (and adapter) with the KV-cache engine.
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { Model } from '../../model/model.js';
import { loadPeftAdapter } from '../../model/peft.js';
import { TextTokenizer } from '../../model/tokenizer.js';
import { UsageError, type CliCommand } from '../command.js';

const USAGE = `usage: seal generate --model DIR [--adapter DIR] (--prompt TEXT | --tokens ids.json) [--chat]
                     [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--n K]
                     [--stop STRING]... [--device cpu|cuda] [--threads N] [--json]

  --prompt is tokenized with the model's tokenizer (--chat wraps it as a user message with the
  chat template); --tokens reads an array of token ids. Greedy by default (--temperature 0).
  Without --json and with one sample, text is streamed as it is generated.
  With --json: {"completions": [{"tokens": [...], "text": "...", "finish_reason": "eos|stop|length"}]}`;

export const generateCommand: CliCommand = {
  name: 'generate',
  summary: 'generate text or tokens (batched KV-cache decoding, n samples, adapters)',
  usage: USAGE,
  async run(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        model: { type: 'string' }, adapter: { type: 'string' }, prompt: { type: 'string' }, tokens: { type: 'string' },
        chat: { type: 'boolean' }, 'max-new-tokens': { type: 'string', default: '64' }, temperature: { type: 'string', default: '0' },
        'top-k': { type: 'string', default: '0' }, 'top-p': { type: 'string', default: '1' }, seed: { type: 'string', default: '0' },
        n: { type: 'string', default: '1' }, stop: { type: 'string', multiple: true }, device: { type: 'string', default: 'cpu' },
        threads: { type: 'string' }, json: { type: 'boolean' },
      },
    });
    if (!values.model) throw new UsageError(`generate: --model is required\n${USAGE}`);
    if ((values.prompt === undefined) === (values.tokens === undefined)) throw new UsageError('generate: give exactly one of --prompt or --tokens');
    if (values.chat && values.tokens !== undefined) throw new UsageError('generate: --chat applies to --prompt text only');
    if (values.device !== 'cpu' && values.device !== 'cuda') throw new UsageError('generate: --device must be cpu or cuda');
    const num = (name: string, v: string | undefined, ok: (x: number) => boolean, what: string) => {
      const x = Number(v);
      if (!ok(x)) throw new UsageError(`generate: --${name} must be ${what}, got '${v}'`);
      return x;
    };
    const maxNew = num('max-new-tokens', values['max-new-tokens'], (x) => Number.isInteger(x) && x >= 1, 'a positive integer');
    const temperature = num('temperature', values.temperature, (x) => x >= 0, '>= 0');
    const topK = num('top-k', values['top-k'], (x) => Number.isInteger(x) && x >= 0, 'a non-negative integer');
    const topP = num('top-p', values['top-p'], (x) => x > 0 && x <= 1, 'in (0, 1]');
    const seed = num('seed', values.seed, (x) => Number.isSafeInteger(x) && x >= 0, 'a non-negative integer');
    const n = num('n', values.n, (x) => Number.isInteger(x) && x >= 1, 'a positive integer');
    if (values.threads !== undefined) {
      const { native } = await import('../../native.js');
      native().setThreads(num('threads', values.threads, (x) => Number.isInteger(x) && x >= 1, 'a positive integer'));
    }

    let tokenizer: TextTokenizer | undefined;
    let ids: number[];
    if (values.prompt !== undefined) {
      tokenizer = await TextTokenizer.load(values.model);
      ids = values.chat ? tokenizer.encodeChat([{ role: 'user', content: values.prompt }], { addGenerationPrompt: true }) : tokenizer.encode(values.prompt);
    } else {
      const file = values.tokens!;
      let json: unknown;
      try { json = JSON.parse(await readFile(file, 'utf8')); } catch (err) { throw new UsageError(`${file}: ${(err as Error).message}`); }
      if (!Array.isArray(json) || json.length === 0 || !json.every((x) => Number.isInteger(x) && x >= 0)) throw new UsageError(`${file}: expected a non-empty array of token ids`);
      ids = json as number[];
      try { tokenizer = await TextTokenizer.load(values.model); } catch { tokenizer = undefined; }  // text is optional with --tokens
    }
    if (values.stop?.length && !tokenizer) throw new UsageError('generate: --stop needs the model directory to have tokenizer files');

    const model = await Model.load(values.model, { device: values.device });
    try {
      const slot = values.adapter ? 0 : -1;
      if (values.adapter) await loadPeftAdapter(model, values.adapter, 0);
      const options = {
        maxNewTokens: maxNew, temperature, topK, topP, seed, n, ...(tokenizer ? { tokenizer, eosTokenIds: tokenizer.eosTokenIds.length ? tokenizer.eosTokenIds : model.config.eosTokenIds } : {}),
        ...(values.stop?.length ? { stop: values.stop } : {}),
      };
      const prompt = [{ tokens: ids, slot }];
      if (!values.json && n === 1 && tokenizer) {
        for await (const e of model.generateStream(prompt, options)) {
          if (e.type === 'token' && e.text) process.stdout.write(e.text);
          if (e.type === 'done') process.stdout.write(`\n[${e.completion.finishReason}, ${e.completion.tokens.length} tokens]\n`);
        }
        return 0;
      }
      const out = await model.generate(prompt, options);
      if (values.json) {
        process.stdout.write(`${JSON.stringify({ completions: out.map((c) => ({ tokens: c.tokens, text: c.text ?? null, finish_reason: c.finishReason })) })}\n`);
      } else {
        for (const c of out) process.stdout.write(`--- sample ${c.sample} [${c.finishReason}]\n${c.text ?? JSON.stringify(c.tokens)}\n`);
      }
      return 0;
    } finally {
      await model.dispose();
    }
  },
};
