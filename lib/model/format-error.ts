// The error every model-directory reader throws for bad input. House rule: the message names the
// file, the field (or tensor) and what was expected versus what was found, so a user can fix the
// file without a debugger. `file` and `field` are also kept as properties for programs and tests.

export class ModelFormatError extends Error {
  readonly file: string;
  readonly field: string | undefined;

  /**
   * @param file  the path of the offending file, as the caller named it
   * @param field what inside it is wrong (`field "hidden_size"`, `tensor "lm_head.weight"`), or
   *              undefined when the file as a whole is
   * @param detail what was expected and what was found
   */
  constructor(file: string, field: string | undefined, detail: string, options?: { cause?: unknown }) {
    super(field === undefined ? `${file}: ${detail}` : `${file}: ${field}: ${detail}`, options);
    this.name = 'ModelFormatError';
    this.file = file;
    this.field = field;
  }
}

/** A short, bounded rendering of a JSON value for "found …" in messages. */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing (field absent)';
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}
