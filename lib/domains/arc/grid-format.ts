// Text representation of ARC grids and tasks for test-time training and inference (reference §4.5,
// `GPTTextMessageRepresenterV2` + `TextExampleRepresenter(io_sep=" -> ", output_footer="#")` +
// `PythonListGridRepresenter`), the chat wrapping, and a parser from model output back to a grid.
//
// Grid text is NumPy's `str()` of the integer array: `[[0 5 0]\n [5 5 5]]` — cells separated by one
// space, rows on new lines, each continuation row starting with one space, no commas. For colours
// 0–9 every cell is one character wide and a 30-wide row is 62 characters, under NumPy's 75-char
// wrap width and its 1000-element summarisation threshold, so no wrapping or "..." ever occurs.
//
// One example is `"{input} -> "` + `"{output}#"`. A task becomes three chat messages:
//   system    = TTT_INSTRUCTION + for each demonstration `"{input} -> {output}#\n"`
//   user      = `"{test input} -> "`
//   assistant = `"{test output}#"`      (training only)
// and is rendered with the model's chat template. `llama3ChatRenderer` reproduces the Llama-3.2
// template the reference used (its `|trim` of every message matters: the user turn ends "->", not
// "-> "), with the date pinned instead of the wall clock (§7.5).

import { MAX_GRID_SIDE, type Grid, type PseudoTask } from './grid.js';

/** EXPERIMENTAL PARAMETER (verbatim, reference §4.5): the TTT / inference instruction. */
export const TTT_INSTRUCTION =
  'Figure out the underlying transformation in the following examples and apply it to the test case. ' +
  'Here are some examples from this transformation, your answer must follow the format.\n' +
  'The input-output grids are provided as python arrays:\n';

/** Separator between an example's input and output (`io_sep`). */
export const IO_SEPARATOR = ' -> ';
/** Terminator after every output grid (`output_footer`). */
export const OUTPUT_TERMINATOR = '#';

export type ChatRole = 'system' | 'user' | 'assistant';
export interface ChatMessage {
  role: ChatRole;
  content: string;
}

/** Renders chat messages to model text, like `tokenizer.apply_chat_template(..., tokenize=False)`. */
export type ChatRenderer = (messages: readonly ChatMessage[], options: { addGenerationPrompt: boolean }) => string;

/** NumPy `str()` of a grid of colours 0–9. */
export function gridToText(g: Grid): string {
  return `[${g.map((row) => `[${row.join(' ')}]`).join('\n ')}]`;
}

/** `"{input} -> "`: the query half of an example. */
export function exampleQueryText(input: Grid): string {
  return gridToText(input) + IO_SEPARATOR;
}

/** `"{output}#"`: the answer half of an example. */
export function exampleAnswerText(output: Grid): string {
  return gridToText(output) + OUTPUT_TERMINATOR;
}

/**
 * The reference's messages for a task (§4.5). The assistant turn is present only when the query's
 * output is known (TTT training examples); inference prompts end after the user turn.
 */
export function taskMessages(task: PseudoTask): ChatMessage[] {
  let system = TTT_INSTRUCTION;
  for (const e of task.train) system += `${exampleQueryText(e.input)}${exampleAnswerText(e.output)}\n`;
  const messages: ChatMessage[] = [
    { role: 'system', content: system },
    { role: 'user', content: exampleQueryText(task.test.input) },
  ];
  if (task.test.output !== undefined) messages.push({ role: 'assistant', content: exampleAnswerText(task.test.output) });
  return messages;
}

export interface Llama3RenderOptions {
  /**
   * The template's "Today Date" line. The reference let transformers insert the current date
   * (`strftime_now("%d %b %Y")`), making training text depend on the wall clock; the default here is
   * the template's own fallback, so output is reproducible.
   */
  dateString?: string;
  /** Emit `<|begin_of_text|>` (the template's `bos_token`). Default true, as the template does. */
  bos?: boolean;
}

/**
 * The Llama-3.1/3.2 chat template (no tools) as plain code: system block with the knowledge-cutoff
 * and date lines, then each turn as `<|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|>`,
 * then the assistant header when `addGenerationPrompt`.
 */
export function llama3ChatRenderer(options: Llama3RenderOptions = {}): ChatRenderer {
  const date = options.dateString ?? '26 Jul 2024';
  const bos = options.bos ?? true;
  return (messages, { addGenerationPrompt }) => {
    let rest = messages;
    let system = '';
    if (messages[0]?.role === 'system') {
      system = messages[0].content.trim();
      rest = messages.slice(1);
    }
    let out = bos ? '<|begin_of_text|>' : '';
    out += '<|start_header_id|>system<|end_header_id|>\n\n';
    out += 'Cutting Knowledge Date: December 2023\n';
    out += `Today Date: ${date}\n\n`;
    out += `${system}<|eot_id|>`;
    for (const m of rest) out += `<|start_header_id|>${m.role}<|end_header_id|>\n\n${m.content.trim()}<|eot_id|>`;
    if (addGenerationPrompt) out += '<|start_header_id|>assistant<|end_header_id|>\n\n';
    return out;
  };
}

/**
 * The inference prompt for a task: system + user turns and the assistant header (§4.7 step 3).
 * The text starts with the template's `<|begin_of_text|>`; the reference ends up with a single BOS
 * at inference (the engine strips the text BOS and vLLM adds one), so tokenize it without adding
 * another (or render with `bos: false` and let the tokenizer add it).
 */
export function queryPrompt(task: PseudoTask, render: ChatRenderer = llama3ChatRenderer()): string {
  const messages = taskMessages({ train: task.train, test: { input: task.test.input } });
  return render(messages, { addGenerationPrompt: true });
}

// ---------------------------------------------------------------------------------------------
// Parsing model output

const DIGIT = /^[0-9]$/;

function finish(rows: string[][]): Grid | null {
  if (rows.length === 0 || rows.length > MAX_GRID_SIDE) return null;
  const w = rows[0]!.length;
  if (w === 0 || w > MAX_GRID_SIDE) return null;
  const grid: Grid = [];
  for (const row of rows) {
    if (row.length !== w) return null;
    const nums: number[] = [];
    for (const tok of row) {
      if (!DIGIT.test(tok)) return null;
      nums.push(tok.charCodeAt(0) - 48);
    }
    grid.push(nums);
  }
  return grid;
}

/** Bracketed form: `[` then one or more `[cells]` then `]`; cells split by spaces/commas/newlines. */
function parseBracketed(s: string): Grid | null {
  let i = 0;
  const skip = () => {
    while (i < s.length && /[\s,]/.test(s[i]!)) i++;
  };
  skip();
  if (s[i] !== '[') return null;
  i++;
  const rows: string[][] = [];
  for (;;) {
    skip();
    if (s[i] === ']') {
      i++;
      break;
    }
    if (s[i] !== '[') return null;
    i++;
    const row: string[] = [];
    for (;;) {
      skip();
      if (i >= s.length) return null;
      if (s[i] === ']') {
        i++;
        break;
      }
      let j = i;
      while (j < s.length && /[0-9]/.test(s[j]!)) j++;
      if (j === i) return null; // a character that is neither a digit, a separator nor ']'
      row.push(s.slice(i, j));
      i = j;
    }
    rows.push(row);
  }
  skip();
  if (i !== s.length) return null;
  return finish(rows);
}

/**
 * Parse a model's answer back to a grid; null when it is not a well-formed grid of colours 0–9 of
 * at most 30×30. Never throws.
 *
 * Accepts the NumPy text this module writes, with or without the trailing `#` and anything the
 * model produced after it, tolerating extra whitespace and commas (Python-list style). Also accepts
 * a bracket-less digit matrix (one row per line). Rows are delimited by brackets, not by counting
 * newlines.
 *
 * Deliberately stricter than the reference decoder (§4.7: strip `#`, delete brackets, split on
 * whitespace, rows = newlines + 1, reshape): that decoder silently re-flows ragged rows whose cell
 * count happens to divide evenly and accepts multi-digit "colours"; both cannot be ARC answers and
 * are rejected here.
 */
export function parseGrid(text: string): Grid | null {
  if (typeof text !== 'string') return null;
  const hash = text.indexOf(OUTPUT_TERMINATOR);
  const body = (hash >= 0 ? text.slice(0, hash) : text).trim();
  if (body === '') return null;
  if (body.includes('[') || body.includes(']')) return parseBracketed(body);
  const lines = body.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  return finish(lines.map((l) => l.split(/[\s,]+/).filter((t) => t !== '')));
}
