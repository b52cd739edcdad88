// The toy world's tokenizer, written as a real Hugging Face `tokenizer.json`: GPT-2's byte-level
// pre-tokenizer (words keep their leading space as "Ġ", newlines are "Ċ"), a WordPiece model over a
// closed vocabulary with an empty continuation prefix, the byte-level decoder (so decode is exact:
// decode(encode(s)) === s), and a TemplateProcessing post-processor that adds <bos>.
//
// The vocabulary is every word piece of every template and format string of the world, every
// attribute value, and every name syllable in two forms: "ĠBal" (a name's first syllable, which
// always follows a space) and "nor" (a later syllable). WordPiece's greedy longest match then
// splits "Balnor" into "ĠBal" + "nor", so a held-out name is a new combination of known tokens.
// The vocabulary depends on no seed: every world shares it.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EMPTY_NOTES, noteLine, passageBlock, qaLine, questionPrompt, selfEditPromptText } from './styles.js';
import {
  ATTR_IMPLICATION_TEMPLATES, ATTR_VALUES, COMBINED_TEMPLATES, FACT_TEMPLATES, QUESTION_TEMPLATES, REVERSE_QUESTION_TEMPLATES,
  REVERSE_TEMPLATES, SYLLABLES,
} from './world.js';

export const SPECIAL_TOKENS = ['<pad>', '<bos>', '<eos>', '<unk>'] as const;
export const PAD_ID = 0;
export const BOS_ID = 1;
export const EOS_ID = 2;
export const UNK_ID = 3;

// GPT-2's pre-tokenization pattern (what the ByteLevel pre-tokenizer with use_regex applies).
const GPT2_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** Byte-level form of an ASCII piece (the only characters the world writes). */
function byteLevel(piece: string): string {
  let out = '';
  for (const ch of piece) {
    const c = ch.charCodeAt(0);
    if (c === 0x20) out += 'Ġ';
    else if (c === 0x0a) out += 'Ċ';
    else if (c > 0x20 && c < 0x7f) out += ch;
    else throw new Error(`toyworld tokenizer: character ${JSON.stringify(ch)} is outside the world's alphabet`);
  }
  return out;
}

/** Pieces of a text as the tokenizer's pre-tokenizer cuts them, in byte-level form. */
export function pretokenize(text: string): string[] {
  return [...text.matchAll(GPT2_PATTERN)].map((m) => byteLevel(m[0]));
}

const cap = (s: string): string => s.charAt(0).toUpperCase() + s.slice(1);

/** Every template and format string with each placeholder's possible fillers (names by a marker). */
function vocabularyTexts(): string[] {
  const MARK = 'Qqqq';
  const fills = (t: string): string[] => {
    // Each variant of the sentence openers; names and values by the marker (added separately).
    const variants = [
      { S: MARK, Sp: `${MARK}'s`, pos: 'his' },
      { S: 'He', Sp: 'His', pos: 'his' },
      { S: 'She', Sp: 'Her', pos: 'her' },
    ];
    return variants.map((v) => t.replace(/\{(\w+)\}/g, (_, k: string) => (k in v ? v[k as keyof typeof v] : MARK)));
  };
  const sentences: string[] = [];
  for (const ts of Object.values(FACT_TEMPLATES)) sentences.push(...ts);
  for (const ts of Object.values(REVERSE_TEMPLATES)) sentences.push(...ts);
  for (const ts of Object.values(ATTR_IMPLICATION_TEMPLATES)) sentences.push(...ts);
  for (const t of COMBINED_TEMPLATES) sentences.push(t.text);
  for (const t of EMPTY_NOTES) sentences.push(t.slice(2));
  const questions: string[] = [];
  for (const ts of Object.values(QUESTION_TEMPLATES)) questions.push(...ts);
  for (const ts of Object.values(REVERSE_QUESTION_TEMPLATES)) questions.push(...ts);
  const texts: string[] = [];
  for (const s of sentences) for (const f of fills(s)) texts.push(`${selfEditPromptText(`${f} ${f}`)}${noteLine(f)}\n${passageBlock(f)}`);
  for (const q of questions) for (const f of fills(q)) texts.push(`${qaLine(f, MARK)}\n${questionPrompt(f)}`);
  return texts;
}

/** The vocabulary in id order: specials, then format/template words, values, numbers, name syllables. */
export function buildVocabulary(): string[] {
  const words = new Set<string>();
  for (const text of vocabularyTexts()) for (const p of pretokenize(text)) if (!p.includes('Qqqq')) words.add(p);
  for (const values of Object.values(ATTR_VALUES)) for (const v of values) words.add(byteLevel(` ${v}`));
  const sortedWords = [...words].sort();
  const syllables: string[] = [];
  for (const s of SYLLABLES) syllables.push(byteLevel(` ${cap(s)}`));
  for (const s of SYLLABLES) syllables.push(s);
  const vocab = [...SPECIAL_TOKENS, ...sortedWords.filter((w) => !syllables.includes(w)), ...syllables];
  if (new Set(vocab).size !== vocab.length) throw new Error('toyworld tokenizer: duplicate vocabulary entries');
  return vocab;
}

/** The tokenizer.json object. */
export function tokenizerJson(vocab: readonly string[] = buildVocabulary()): Record<string, unknown> {
  const special = (content: string, id: number) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: SPECIAL_TOKENS.map((t, i) => special(t, i)),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<bos>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<bos>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<bos>': { id: '<bos>', ids: [BOS_ID], tokens: ['<bos>'] } },
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'WordPiece',
      unk_token: '<unk>',
      continuing_subword_prefix: '',
      max_input_chars_per_word: 100,
      vocab: Object.fromEntries(vocab.map((t, i) => [t, i])),
    },
  };
}

/**
 * A plain chat template: user turns are written as they are, each followed by a newline; assistant
 * turns are followed by <eos>. The model is a completion model; the template exists so chat-style
 * callers (seal generate --chat) work on it like on any Hugging Face model.
 */
export const CHAT_TEMPLATE =
  "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}{% else %}{{ message['content'] }}\n{% endif %}{% endfor %}";

export function tokenizerConfigJson(maxLength: number): Record<string, unknown> {
  return {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: '<bos>',
    eos_token: '<eos>',
    pad_token: '<pad>',
    unk_token: '<unk>',
    add_bos_token: true,
    add_eos_token: false,
    model_max_length: maxLength,
    clean_up_tokenization_spaces: false,
    chat_template: CHAT_TEMPLATE,
  };
}

/** Writes tokenizer.json and tokenizer_config.json into `dir`; returns the vocabulary size. */
export async function writeTokenizer(dir: string, maxLength = 512): Promise<number> {
  const vocab = buildVocabulary();
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'tokenizer.json'), `${JSON.stringify(tokenizerJson(vocab), null, 2)}\n`);
  await writeFile(join(dir, 'tokenizer_config.json'), `${JSON.stringify(tokenizerConfigJson(maxLength), null, 2)}\n`);
  return vocab.length;
}
