// Python `str` semantics the SEAL reference relies on implicitly, reproduced exactly.
//
// The reference's text handling (build_train_sequences, the grader's `pred.strip()`, the
// official SQuAD normaliser's `text.split()` and `\b(a|an|the)\b`) is Python 3 `str` code. The
// JavaScript look-alikes differ at the edges: `String.prototype.trim` strips U+FEFF but not
// U+001C..U+001F or U+0085; `split(/\r?\n/)` is not `str.splitlines()`; JS `\b`/`\w`/`\d` are
// ASCII-only while Python's are Unicode. Self-edits are free model text, so those edges occur,
// and a reimplementation that wants the same training sequences and grades as the reference
// (seal-method.md §1.3, §1.6, §8) must use the Python definitions. Sets below were dumped from
// CPython 3.11 (`chr(c).isspace()`, `splitlines()`, `re` `\w`/`\d` categories).

/** Characters for which CPython's `str.isspace()` is true (used by strip() and split()). */
const PY_WHITESPACE =
  '\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006' +
  '\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000';

const WS_CLASS = `[${escapeForClass(PY_WHITESPACE)}]`;
const LEADING_WS = new RegExp(`^${WS_CLASS}+`, 'u');
const TRAILING_WS = new RegExp(`${WS_CLASS}+$`, 'u');
const WS_RUN = new RegExp(`${WS_CLASS}+`, 'u');

/**
 * Line boundaries of CPython's `str.splitlines()`: \n, \r, \r\n, \v, \f, \x1c, \x1d, \x1e,
 * \x85, U+2028, U+2029 (note: \x1f is whitespace but not a line boundary).
 */
const LINE_BREAK = /\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]/u;

function escapeForClass(chars: string): string {
  let out = '';
  for (const ch of chars) out += `\\u{${ch.codePointAt(0)!.toString(16)}}`;
  return out;
}

/** Python `s.strip()` (no argument). */
export function pyStrip(s: string): string {
  return s.replace(LEADING_WS, '').replace(TRAILING_WS, '');
}

/** Python `s.lstrip()` (no argument). */
export function pyLstrip(s: string): string {
  return s.replace(LEADING_WS, '');
}

/** Python `s.split()` (no argument): split on whitespace runs, no empty strings. */
export function pySplitWhitespace(s: string): string[] {
  const stripped = pyStrip(s);
  return stripped === '' ? [] : stripped.split(WS_RUN);
}

/** Python `s.splitlines()` (keepends=False): no trailing empty element for a final break. */
export function pySplitlines(s: string): string[] {
  if (s === '') return [];
  const parts = s.split(LINE_BREAK);
  // splitlines() does not report an empty line after a terminal line break.
  if (parts.length > 1 && parts[parts.length - 1] === '') parts.pop();
  return parts;
}

/** Python 3 `re` `\w` for str patterns: Unicode letters, numbers (Nd, Nl, No) and `_`. */
export const PY_WORD_CHAR = '[\\p{L}\\p{N}_]';

/** Python 3 `re` `\d` for str patterns: any Unicode decimal digit (category Nd). */
export const PY_DIGIT = '\\p{Nd}';

/** Python 3 `re` `\s` for str patterns (same set as str.isspace()). */
export const PY_SPACE = WS_CLASS;
