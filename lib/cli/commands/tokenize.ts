// `seal tokenize` — show the token ids a model's tokenizer gives a text (or a one-turn chat).
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { TextTokenizer } from '../../model/tokenizer.js';
import { UsageError, type CliCommand } from '../command.js';

const usage = `usage: seal tokenize --model DIR (--text FILE | --string TEXT) [--no-special] [--chat] [--json]

  --model DIR     model or tokenizer directory (tokenizer.json + tokenizer_config.json)
  --text FILE     read the text from FILE ("-" reads standard input)
  --string TEXT   the text itself
  --no-special    do not add the special tokens the tokenizer adds by itself (e.g. BOS)
  --chat          treat the text as the user message of a one-turn chat, rendered with the
                  model's chat template and its generation prompt
  --json          print {"ids":[...]} on one line instead of a table`;

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export const tokenizeCommand: CliCommand = {
  name: 'tokenize',
  summary: "show the token ids of a text (or a chat turn) under a model's tokenizer",
  usage,
  async run(argv) {
    let values;
    try {
      ({ values } = parseArgs({
        args: argv,
        options: {
          model: { type: 'string' },
          text: { type: 'string' },
          string: { type: 'string' },
          'no-special': { type: 'boolean' },
          chat: { type: 'boolean' },
          json: { type: 'boolean' },
        },
        strict: true,
        allowPositionals: false,
      }));
    } catch (err) {
      throw new UsageError(`tokenize: ${err instanceof Error ? err.message : String(err)}\n${usage}`);
    }
    if (values.model === undefined) throw new UsageError(`tokenize: --model DIR is required\n${usage}`);
    if ((values.text === undefined) === (values.string === undefined)) {
      throw new UsageError(`tokenize: give exactly one of --text FILE or --string TEXT\n${usage}`);
    }
    // A chat rendering already contains every special token the template writes; the tokenizer
    // adds none on top (as transformers' apply_chat_template(tokenize=True)), so the flag means nothing there.
    if (values.chat && values['no-special']) throw new UsageError('tokenize: --no-special has no effect with --chat (the chat template decides the special tokens)');

    let text: string;
    if (values.string !== undefined) {
      text = values.string;
    } else if (values.text === '-') {
      text = await readStdin();
    } else {
      const file = values.text as string;
      try {
        text = await readFile(file, 'utf8');
      } catch (err) {
        throw new UsageError(`tokenize: cannot read --text ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
      }
    }

    const tokenizer = await TextTokenizer.load(values.model);
    const ids = values.chat
      ? tokenizer.encodeChat([{ role: 'user', content: text }], { addGenerationPrompt: true })
      : tokenizer.encode(text, { addSpecialTokens: !values['no-special'] });

    if (values.json) {
      process.stdout.write(`${JSON.stringify({ ids })}\n`);
      return 0;
    }
    // Table: position, id, the vocabulary string (byte-level form such as "Ġworld") and the text
    // the token decodes to on its own (U+FFFD where it holds part of a multi-byte character).
    const posWidth = String(Math.max(ids.length - 1, 0)).length;
    const idWidth = Math.max(2, ...ids.map((id) => String(id).length));
    const lines = ids.map((id, i) => {
      const token = tokenizer.idToToken(id) ?? '?';
      return `${String(i).padStart(posWidth)}  ${String(id).padStart(idWidth)}  ${JSON.stringify(token)}  ${JSON.stringify(tokenizer.decode([id]))}`;
    });
    lines.push(`${ids.length} token${ids.length === 1 ? '' : 's'}`);
    process.stdout.write(`${lines.join('\n')}\n`);
    return 0;
  },
};
