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
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? `not found (expected ${what})` : `cannot read the file (${code ?? String(err)})`;
    throw new ModelFormatError(path, undefined, why, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    const message = (err as Error).message;
    const pos = /position (\d+)/.exec(message);
    let where = '';
    if (pos) {
      const before = text.slice(0, Number(pos[1]));
      where = ` at line ${before.split('\n').length}, column ${before.length - before.lastIndexOf('\n')}`;
    }
    throw new ModelFormatError(path, undefined, `invalid JSON${where} (${message})`, { cause: err });
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
