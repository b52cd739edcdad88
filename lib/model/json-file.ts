// Reads a JSON file that must hold an object, with errors that name the file and, for a parse
// failure, the line and column — the shared first step of every model-directory JSON reader.
import { readFile } from 'node:fs/promises';
import { ModelFormatError, describeValue } from './format-error.js';

/**
 * Parses `path` as a JSON object. `what` says what the file is for ("a Hugging Face model
 * directory with a config.json"), shown when it is missing. A missing file throws a
 * ModelFormatError whose `cause.code` is 'ENOENT', so callers can treat optional files as absent.
 */
export async function readJsonObject(path: string, what: string): Promise<Record<string, unknown>> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? `not found (expected ${what})` : `cannot read the file (${code ?? String(err)})`;
    throw new ModelFormatError(path, undefined, why, { cause: err });
  }
  let text: string;
  try {
    // Strict decoding: a lenient one would turn bad bytes into U+FFFD and carry on silently.
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new ModelFormatError(path, undefined, 'is not valid UTF-8 text');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ModelFormatError(path, undefined, `invalid JSON ${jsonErrorWhere(text)} (${(err as Error).message})`, { cause: err });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ModelFormatError(path, undefined, `expected a JSON object, found ${describeValue(json)}`);
  }
  return json as Record<string, unknown>;
}

/** True when `err` is the "file not found" error of readJsonObject. */
export function isMissingFile(err: unknown): boolean {
  return (err as { cause?: NodeJS.ErrnoException } | undefined)?.cause?.code === 'ENOENT';
}

const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const LITERAL = /true|false|null/y;

/**
 * Offset of the first JSON syntax error in `text`, or -1 if it is valid. V8's JSON.parse messages
 * do not always carry a position ("Unexpected token '}', ..."), so we find it ourselves. Iterative,
 * so hostile nesting cannot overflow the stack.
 */
export function jsonErrorOffset(text: string): number {
  const n = text.length;
  const stack: string[] = []; // closing bracket of each open container
  let i = 0;
  let state: 'value' | 'key' | 'after' = 'value';
  const skipWhitespace = () => {
    while (i < n && (text[i] === ' ' || text[i] === '\t' || text[i] === '\n' || text[i] === '\r')) i++;
  };
  const string = (): boolean => {
    i++; // opening quote
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return true;
      }
      if (c < 0x20) return false;
      if (c === 0x5c) {
        const e = text[i + 1];
        if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) i += 6;
        else if (e !== undefined && '"\\/bfnrt'.includes(e)) i += 2;
        else return false;
      } else {
        i++;
      }
    }
    return false;
  };
  for (;;) {
    skipWhitespace();
    if (state === 'value') {
      const c = text[i];
      if (c === '{' || c === '[') {
        i++;
        skipWhitespace();
        const close = c === '{' ? '}' : ']';
        if (text[i] === close) {
          i++;
          state = 'after';
        } else {
          stack.push(close);
          state = c === '{' ? 'key' : 'value';
        }
      } else if (c === '"') {
        if (!string()) return i;
        state = 'after';
      } else {
        const re = c === 't' || c === 'f' || c === 'n' ? LITERAL : NUMBER;
        re.lastIndex = i;
        if (re.exec(text) === null) return i;
        i = re.lastIndex;
        state = 'after';
      }
    } else if (state === 'key') {
      if (text[i] !== '"' || !string()) return i;
      skipWhitespace();
      if (text[i] !== ':') return i;
      i++;
      state = 'value';
    } else {
      const close = stack.at(-1);
      if (close === undefined) return i < n ? i : -1;
      if (text[i] === ',') {
        i++;
        state = close === '}' ? 'key' : 'value';
      } else if (text[i] === close) {
        i++;
        stack.pop();
      } else {
        return i;
      }
    }
  }
}

/** "at line L, column C" (or "at the end, line L") of the first syntax error, for messages. */
export function jsonErrorWhere(text: string): string {
  const offset = jsonErrorOffset(text);
  if (offset < 0) return 'somewhere';
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  const column = offset - before.lastIndexOf('\n');
  return offset >= text.length ? `at the end of the input (line ${line}, column ${column})` : `at line ${line}, column ${column}`;
}
