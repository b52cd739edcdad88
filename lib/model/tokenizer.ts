// Text tokenizer for Hugging Face model directories: tokenizer.json + tokenizer_config.json, the
// chat template, and the special-token ids generation needs. Token ids come from
// @huggingface/tokenizers (pure JS; matches the Rust `tokenizers` crate on our parity corpus, see
// test/tokenizer.test.ts) and chat templates are rendered with @huggingface/jinja the way
// transformers' apply_chat_template renders them.
import { readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Environment, Interpreter, Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';

/** One chat turn. `content` is usually a string; templates may read other fields (tool_calls…). */
export interface ChatMessage {
  role: string;
  content?: unknown;
  [key: string]: unknown;
}

export interface EncodeOptions {
  /** Add the post-processor's special tokens (e.g. Llama-3's <|begin_of_text|>). Default true. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop special tokens (BOS/EOS/<|im_end|>…) from the text. Default false. */
  skipSpecialTokens?: boolean;
  /**
   * transformers' `clean_up_tokenization_spaces` (" ." → ".", " 's" → "'s" …). Default false even
   * when tokenizer_config.json sets it: it corrupts text (Llama-3 sets it, and then "sed 's/x/'"
   * decodes as "sed's/x/'"), and the Rust tokenizer's own decode never applies it.
   */
  cleanUpTokenizationSpaces?: boolean;
}

export interface ChatTemplateOptions {
  /** Append the prompt that opens the assistant's turn. Default false, as in transformers. */
  addGenerationPrompt?: boolean;
  /** Tool (function) schemas, passed to the template as `tools`. */
  tools?: unknown[] | null;
  /** Retrieval documents, passed to the template as `documents`. */
  documents?: unknown[] | null;
  /** Extra template variables (e.g. `date_string`, `enable_thinking`); they override the defaults. */
  extra?: Record<string, unknown>;
  /** Which named template to use when the tokenizer has several; default "default"
   *  (or "tool_use" when tools are given and such a template exists, as transformers does). */
  templateName?: string;
}

type Json = Record<string, unknown>;

/** The special tokens transformers puts in `special_tokens_map` (and so into the template context). */
const SPECIAL_TOKEN_KEYS = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'] as const;
type SpecialTokenKey = (typeof SPECIAL_TOKEN_KEYS)[number];

const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];
const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];

/**
 * Python's `datetime.now().strftime(fmt)` in the C locale. Templates call it (Llama-3.x puts today's
 * date in the system prompt); @huggingface/jinja's built-in one names months in the process
 * locale, which would make the rendered prompt depend on LANG.
 */
export function strftime(date: Date, fmt: string): string {
  const pad = (n: number, w = 2): string => String(n).padStart(w, '0');
  const hour12 = date.getHours() % 12 === 0 ? 12 : date.getHours() % 12;
  const startOfYear = new Date(date.getFullYear(), 0, 1);
  const dayOfYear = Math.round((new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime() - startOfYear.getTime()) / 86_400_000) + 1;
  // `%-d` (glibc: no padding) is accepted too, since templates written on Linux use it.
  return fmt.replace(/%(-?)([a-zA-Z%])/g, (whole, dash: string, code: string) => {
    const p = (n: number, w = 2): string => (dash === '-' ? String(n) : pad(n, w));
    switch (code) {
      case 'Y': return String(date.getFullYear());
      case 'y': return pad(date.getFullYear() % 100);
      case 'm': return p(date.getMonth() + 1);
      case 'd': return p(date.getDate());
      case 'e': return String(date.getDate()).padStart(2, ' ');
      case 'j': return p(dayOfYear, 3);
      case 'H': return p(date.getHours());
      case 'I': return p(hour12);
      case 'M': return p(date.getMinutes());
      case 'S': return p(date.getSeconds());
      case 'p': return date.getHours() < 12 ? 'AM' : 'PM';
      case 'B': return MONTHS[date.getMonth()] ?? '';
      case 'b': case 'h': return (MONTHS[date.getMonth()] ?? '').slice(0, 3);
      case 'A': return DAYS[date.getDay()] ?? '';
      case 'a': return (DAYS[date.getDay()] ?? '').slice(0, 3);
      case '%': return '%';
      default: return whole;
    }
  });
}

/** Python's range(stop) / range(start, stop[, step]), the `range` global templates use. */
function pythonRange(start: number, stop?: number, step = 1): number[] {
  if (stop === undefined) [start, stop] = [0, start];
  if (step === 0) throw new Error('range() arg 3 must not be zero');
  const out: number[] = [];
  for (let i = start; step > 0 ? i < stop : i > stop; i += step) out.push(i);
  return out;
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A special token in a config file is a string or an AddedToken object `{content, …}`. */
function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v.content === 'string') return v.content;
  return undefined;
}

async function readJson(dir: string, name: string, required: true): Promise<Json>;
async function readJson(dir: string, name: string, required: false): Promise<Json | undefined>;
async function readJson(dir: string, name: string, required: boolean): Promise<Json | undefined> {
  const text = await readText(dir, name, required);
  if (text === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new Error(`${join(dir, name)}: not valid JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  if (!isObject(parsed)) throw new Error(`${join(dir, name)}: expected a JSON object at the top level`);
  return parsed;
}

async function readText(dir: string, name: string, required: boolean): Promise<string | undefined> {
  try {
    return await readFile(join(dir, name), 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !required) return undefined;
    if (code === 'ENOENT') throw new Error(`tokenizer directory ${dir}: ${name} not found (a tokenizer needs tokenizer.json and tokenizer_config.json)`);
    throw new Error(`${join(dir, name)}: cannot read (${err instanceof Error ? err.message : String(err)})`);
  }
}

/** The chat template(s) a directory declares: one source, or several by name. */
type TemplateSource = { kind: 'none' } | { kind: 'single'; source: string; from: string } | { kind: 'named'; sources: Map<string, string>; from: string };

function parseTemplateField(value: unknown, from: string): TemplateSource {
  if (value === undefined || value === null) return { kind: 'none' };
  if (typeof value === 'string') return { kind: 'single', source: value, from };
  // transformers saves several templates as [{name, template}, …]; "default" is the plain one.
  if (Array.isArray(value)) {
    const sources = new Map<string, string>();
    for (const [i, entry] of value.entries()) {
      if (!isObject(entry) || typeof entry.name !== 'string' || typeof entry.template !== 'string') {
        throw new Error(`${from}: chat_template[${i}] must be {"name": string, "template": string}`);
      }
      sources.set(entry.name, entry.template);
    }
    return { kind: 'named', sources, from };
  }
  throw new Error(`${from}: chat_template must be a string or a list of {name, template}, got ${typeof value}`);
}

export class TextTokenizer {
  /** The directory the tokenizer was loaded from. */
  readonly dir: string;
  readonly bosToken: string | undefined;
  readonly bosTokenId: number | undefined;
  readonly eosToken: string | undefined;
  /** Every id that ends a generation: the tokenizer's eos_token, then any others generation_config.json lists. */
  readonly eosTokenIds: number[];
  readonly padToken: string | undefined;
  readonly padTokenId: number | undefined;
  readonly unkTokenId: number | undefined;
  /** One past the largest token id, added tokens included (transformers' `len(tokenizer)`). It can be
   *  smaller than the model's embedding rows (Qwen2.5: 151665 vs 151936). */
  readonly vocabSize: number;

  readonly #tok: Tokenizer;
  readonly #specialTokens: Map<SpecialTokenKey, string>;
  readonly #additionalSpecialTokens: string[] | undefined;
  readonly #template: TemplateSource;
  readonly #compiled = new Map<string, Template>();

  private constructor(args: {
    dir: string;
    tok: Tokenizer;
    specialTokens: Map<SpecialTokenKey, string>;
    additionalSpecialTokens: string[] | undefined;
    template: TemplateSource;
    eosTokenIds: number[];
    bosTokenId: number | undefined;
    padTokenId: number | undefined;
    unkTokenId: number | undefined;
    vocabSize: number;
  }) {
    this.dir = args.dir;
    this.#tok = args.tok;
    this.#specialTokens = args.specialTokens;
    this.#additionalSpecialTokens = args.additionalSpecialTokens;
    this.#template = args.template;
    this.bosToken = args.specialTokens.get('bos_token');
    this.eosToken = args.specialTokens.get('eos_token');
    this.padToken = args.specialTokens.get('pad_token');
    this.bosTokenId = args.bosTokenId;
    this.eosTokenIds = args.eosTokenIds;
    this.padTokenId = args.padTokenId;
    this.unkTokenId = args.unkTokenId;
    this.vocabSize = args.vocabSize;
  }

  /**
   * Loads a tokenizer from a Hugging Face directory. Needs tokenizer.json and tokenizer_config.json;
   * chat_template.jinja (or chat_template.json) wins over the template inside tokenizer_config.json;
   * special_tokens_map.json, generation_config.json and config.json only fill in what is missing.
   */
  static async load(dirIn: string | URL): Promise<TextTokenizer> {
    // resolve() drops the trailing slash a directory URL carries.
    const dir = dirIn instanceof URL ? resolve(fileURLToPath(dirIn)) : dirIn;
    const st = await stat(dir).catch(() => undefined);
    if (!st) throw new Error(`tokenizer directory ${dir} does not exist`);
    if (!st.isDirectory()) throw new Error(`tokenizer directory ${dir} is not a directory`);
    const [tokenizerJson, config, specialMap, generation, modelConfig, templateFile, templateJson] = await Promise.all([
      readJson(dir, 'tokenizer.json', true),
      readJson(dir, 'tokenizer_config.json', true),
      readJson(dir, 'special_tokens_map.json', false),
      readJson(dir, 'generation_config.json', false),
      readJson(dir, 'config.json', false),
      readText(dir, 'chat_template.jinja', false),
      readJson(dir, 'chat_template.json', false),
    ]);

    let tok: Tokenizer;
    try {
      tok = new Tokenizer(tokenizerJson, config);
    } catch (err) {
      throw new Error(`${join(dir, 'tokenizer.json')}: unsupported or malformed tokenizer (${err instanceof Error ? err.message : String(err)})`);
    }

    const tokenId = (token: string, from: string): number => {
      const id = tok.token_to_id(token);
      if (id === undefined) throw new Error(`${from}: special token ${JSON.stringify(token)} is not in the vocabulary of ${join(dir, 'tokenizer.json')}`);
      return id;
    };

    // Special-token strings: tokenizer_config.json first, special_tokens_map.json for what it lacks.
    const specialTokens = new Map<SpecialTokenKey, string>();
    const specialFrom = new Map<SpecialTokenKey, string>();
    for (const key of SPECIAL_TOKEN_KEYS) {
      const fromConfig = tokenContent(config[key]);
      const fromMap = specialMap ? tokenContent(specialMap[key]) : undefined;
      const value = fromConfig ?? fromMap;
      if (value !== undefined) {
        specialTokens.set(key, value);
        specialFrom.set(key, join(dir, fromConfig !== undefined ? 'tokenizer_config.json' : 'special_tokens_map.json'));
      }
    }
    const additionalRaw = config.additional_special_tokens ?? specialMap?.additional_special_tokens;
    const additionalSpecialTokens = Array.isArray(additionalRaw)
      ? additionalRaw.map(tokenContent).filter((s): s is string => s !== undefined)
      : undefined;

    const idOf = (key: SpecialTokenKey): number | undefined => {
      const token = specialTokens.get(key);
      return token === undefined ? undefined : tokenId(token, `${specialFrom.get(key)} (${key})`);
    };

    // Ids from generation_config.json (or, failing that, config.json): an int or a list of ints.
    const genSource = generation ?? modelConfig;
    const genFile = join(dir, generation ? 'generation_config.json' : 'config.json');
    const genIds = (field: string): number[] => {
      const v = genSource?.[field];
      if (v === undefined || v === null) return [];
      const list = Array.isArray(v) ? v : [v];
      for (const x of list) {
        if (!Number.isInteger(x) || (x as number) < 0) throw new Error(`${genFile}: ${field} must be a token id or a list of token ids, got ${JSON.stringify(v)}`);
      }
      return list as number[];
    };

    const eosTokenIds: number[] = [];
    const eosId = idOf('eos_token');
    if (eosId !== undefined) eosTokenIds.push(eosId);
    for (const id of genIds('eos_token_id')) if (!eosTokenIds.includes(id)) eosTokenIds.push(id);

    let vocabSize = 0;
    for (const id of tok.get_vocab(true).values()) vocabSize = Math.max(vocabSize, id + 1);

    let template: TemplateSource = parseTemplateField(config.chat_template, join(dir, 'tokenizer_config.json'));
    if (templateJson !== undefined) template = parseTemplateField(templateJson.chat_template, join(dir, 'chat_template.json'));
    if (templateFile !== undefined) template = { kind: 'single', source: templateFile, from: join(dir, 'chat_template.jinja') };

    return new TextTokenizer({
      dir,
      tok,
      specialTokens,
      additionalSpecialTokens,
      template,
      eosTokenIds,
      bosTokenId: idOf('bos_token') ?? genIds('bos_token_id')[0],
      padTokenId: idOf('pad_token') ?? genIds('pad_token_id')[0],
      unkTokenId: idOf('unk_token'),
      vocabSize,
    });
  }

  /** Text → token ids, as transformers' `tokenizer.encode(text)` (special tokens from the post-processor). */
  encode(text: string, { addSpecialTokens = true }: EncodeOptions = {}): number[] {
    return this.#tok.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  /** Token ids → text. Ids with no token (past the tokenizer's vocabulary) are dropped, as the Rust tokenizer does. */
  decode(ids: readonly number[], { skipSpecialTokens = false, cleanUpTokenizationSpaces = false }: DecodeOptions = {}): string {
    const known: number[] = [];
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0) throw new TypeError(`decode: token ids must be non-negative integers, got ${id}`);
      if (id < this.vocabSize && this.#tok.id_to_token(id) !== undefined) known.push(id);
    }
    // @huggingface/tokenizers rejects an empty list; an empty list is simply no text.
    if (known.length === 0) return '';
    return this.#tok.decode(known, { skip_special_tokens: skipSpecialTokens, clean_up_tokenization_spaces: cleanUpTokenizationSpaces });
  }

  /** The vocabulary string of a token id (byte-level form, e.g. "Ġworld"), or undefined. */
  idToToken(id: number): string | undefined {
    return this.#tok.id_to_token(id);
  }

  /** The id of a vocabulary string, or undefined. */
  tokenToId(token: string): number | undefined {
    return this.#tok.token_to_id(token);
  }

  get hasChatTemplate(): boolean {
    return this.#template.kind !== 'none';
  }

  /** Renders a conversation with the model's chat template, as transformers' apply_chat_template(tokenize=False). */
  applyChatTemplate(messages: readonly ChatMessage[], opts: ChatTemplateOptions = {}): string {
    const { name, template } = this.#pickTemplate(opts);
    // Globals first (what @huggingface/jinja's own render() declares, with two replaced), then what
    // transformers passes: messages, tools, documents, add_generation_prompt, the special tokens
    // as strings, and the caller's extras, which may override any of them.
    const context: Record<string, unknown> = {
      true: true, false: false, none: null, True: true, False: false, None: null,
      range: pythonRange,
      raise_exception: (message: unknown): never => {
        throw new ChatTemplateError(`chat template of ${this.dir} raised: ${String(message)}`);
      },
      strftime_now: (fmt: unknown): string => strftime(new Date(), String(fmt)),
      messages,
      tools: opts.tools ?? null,
      documents: opts.documents ?? null,
      add_generation_prompt: opts.addGenerationPrompt ?? false,
    };
    for (const [key, value] of this.#specialTokens) context[key] = value;
    if (this.#additionalSpecialTokens) context.additional_special_tokens = this.#additionalSpecialTokens;
    Object.assign(context, opts.extra);
    try {
      // Template.render() cannot be used: it declares its own raise_exception and strftime_now
      // (whose month names follow the process locale: "juil." under LANG=fr_FR) and refuses
      // redeclaration. This is the same two steps it takes, with our globals.
      const env = new Environment();
      for (const [key, value] of Object.entries(context)) env.set(key, value);
      const result = new Interpreter(env).run(template.parsed).value;
      if (typeof result !== 'string') throw new Error(`rendered to ${typeof result}, not text`);
      return result;
    } catch (err) {
      if (err instanceof ChatTemplateError) throw err;
      throw new Error(`chat template ${name === 'default' ? '' : `"${name}" `}of ${this.dir} failed to render: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  /** Renders then encodes, adding no special tokens beyond what the template wrote (as apply_chat_template(tokenize=True)). */
  encodeChat(messages: readonly ChatMessage[], opts: ChatTemplateOptions = {}): number[] {
    return this.encode(this.applyChatTemplate(messages, opts), { addSpecialTokens: false });
  }

  #pickTemplate(opts: ChatTemplateOptions): { name: string; template: Template } {
    const t = this.#template;
    if (t.kind === 'none') {
      throw new Error(`model ${this.dir} has no chat template (looked for chat_template.jinja, chat_template.json and "chat_template" in tokenizer_config.json)`);
    }
    let name = opts.templateName ?? 'default';
    let source: string;
    if (t.kind === 'single') {
      if (opts.templateName !== undefined && opts.templateName !== 'default') {
        throw new Error(`${t.from}: has a single chat template, not one named "${opts.templateName}"`);
      }
      source = t.source;
    } else {
      if (opts.templateName === undefined && opts.tools && t.sources.has('tool_use')) name = 'tool_use';
      const found = t.sources.get(name);
      if (found === undefined) {
        throw new Error(`${t.from}: no chat template named "${name}" (has: ${[...t.sources.keys()].join(', ')})`);
      }
      source = found;
    }
    let compiled = this.#compiled.get(name);
    if (!compiled) {
      try {
        compiled = new Template(source);
      } catch (err) {
        throw new Error(`${t.from}: chat template${name === 'default' ? '' : ` "${name}"`} does not parse (${err instanceof Error ? err.message : String(err)})`);
      }
      this.#compiled.set(name, compiled);
    }
    return { name, template: compiled };
  }
}

/** A template called raise_exception(): the conversation does not fit the template (its message says why). */
export class ChatTemplateError extends Error {
  override name = 'ChatTemplateError';
}

export interface DecodeStream {
  /** Adds one generated id; returns the text it completes ("" while a character is still incomplete). */
  push(id: number): string;
  /** Returns whatever text is still held back (an incomplete character decodes as U+FFFD). */
  flush(): string;
}

export interface DecodeStreamOptions extends DecodeOptions {
  /**
   * Ids that come before the stream (e.g. the prompt's last tokens): they are not emitted, but give
   * the first generated token its context, so that "▁upon" after "Once" streams as " upon".
   */
  prefixIds?: readonly number[];
}

/**
 * Incremental detokenizer for generation. Byte-level tokens can end in the middle of a UTF-8
 * character, and SentencePiece decoders strip the first token's leading space, so decoding tokens
 * one at a time is wrong. As vLLM does, it decodes a short window twice, with and without the new
 * tokens, and emits the difference once it no longer ends in U+FFFD (an incomplete character).
 * Each push decodes only the window since the last emitted text, so a long generation costs O(n).
 */
export function createDecodeStream(tokenizer: TextTokenizer, opts: DecodeStreamOptions = {}): DecodeStream {
  const { prefixIds = [], ...decodeOpts } = opts;
  const ids: number[] = [...prefixIds];
  // A few context tokens are enough: the window only needs to start on a token boundary before the new text.
  let prefixOffset = Math.max(0, ids.length - 5);
  let readOffset = ids.length;
  const decode = (from: number, to?: number): string => tokenizer.decode(ids.slice(from, to), decodeOpts);
  return {
    push(id: number): string {
      ids.push(id);
      const prefixText = decode(prefixOffset, readOffset);
      const newText = decode(prefixOffset);
      if (newText.length > prefixText.length && !newText.endsWith('\uFFFD')) {
        prefixOffset = readOffset;
        readOffset = ids.length;
        return newText.slice(prefixText.length);
      }
      return '';
    },
    flush(): string {
      const prefixText = decode(prefixOffset, readOffset);
      const newText = decode(prefixOffset);
      prefixOffset = readOffset;
      readOffset = ids.length;
      return newText.length > prefixText.length ? newText.slice(prefixText.length) : '';
    },
  };
}
