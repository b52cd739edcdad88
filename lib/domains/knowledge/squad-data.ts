// Loader for SEAL's SQuAD files (`squad_val.json`, `squad_train.json`), seal-method.md §1.1:
// a JSON array of passage records `{title, context, questions: [{question, answer}]}` with one
// gold answer string per question (the first SQuAD reference answer). squad_val.json holds
// 2,067 passages / 10,570 questions; squad_train.json 18,891 / 87,599.
//
// Bad input must produce an error naming the file, the passage and the field (DESIGN.md), e.g.
//   squad_val.json: passage 17: questions[3].answer: expected a string, got number
// Records are validated one at a time so the message points at the record, and the result keeps
// one copy of the data: the file text and the parsed array are dropped once the typed passages
// exist (their strings are shared, not copied).

import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

export interface SquadQuestion {
  question: string;
  /** The single gold answer of the reference's files. */
  answer: string;
}

export interface SquadPassage {
  /** 0-based position in the source file: the stable id the reference's index lists use (Appendix A). */
  id: number;
  title: string;
  context: string;
  questions: SquadQuestion[];
}

/** A SEAL SQuAD file that is not what it should be; the message says where and what. */
export class SquadDataError extends Error {
  override name = 'SquadDataError';
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value;
}

function expected(what: string) {
  return (issue: { input?: unknown }) =>
    issue.input === undefined ? `missing (expected ${what})` : `expected ${what}, got ${describe(issue.input)}`;
}

const questionSchema = z.object(
  {
    question: z.string({ error: expected('a string') }),
    answer: z.string({ error: expected('a string') }),
  },
  { error: expected('an object {question, answer}') },
);

// Unknown extra keys are accepted and dropped: SEAL's derived files are squad records plus
// `completions`/`prompt` (§1.1), and those still load as passages.
const passageSchema = z.object(
  {
    title: z.string({ error: expected('a string') }),
    context: z.string({ error: expected('a string') }).min(1, { error: 'expected a non-empty string' }),
    questions: z.array(questionSchema, { error: expected('an array of {question, answer}') }),
  },
  { error: expected('an object {title, context, questions}') },
);

function fieldPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out === '' ? String(key) : `.${String(key)}`;
  }
  return out;
}

/** At most this many problems are listed in one error (a systematically wrong file has thousands). */
const MAX_LISTED_PROBLEMS = 10;

/**
 * Validates already-read JSON text of a SEAL SQuAD file. `label` names the file in errors.
 * Throws SquadDataError listing up to 10 problems, each as `label: passage N: field: problem`.
 */
export function parseSquadJson(text: string, label: string): SquadPassage[] {
  let raw: unknown;
  try {
    // A UTF-8 BOM is harmless; strip it rather than fail on it.
    raw = JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
  } catch (err) {
    throw new SquadDataError(`${label}: not valid JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(raw)) {
    throw new SquadDataError(`${label}: expected a JSON array of passages {title, context, questions}, got ${describe(raw)}`);
  }
  const problems: string[] = [];
  let problemCount = 0;
  const passages: SquadPassage[] = new Array(raw.length);
  for (let i = 0; i < raw.length; i++) {
    const result = passageSchema.safeParse(raw[i]);
    if (!result.success) {
      for (const issue of result.error.issues) {
        problemCount += 1;
        if (problems.length < MAX_LISTED_PROBLEMS) {
          const field = fieldPath(issue.path);
          problems.push(`${label}: passage ${i}: ${field === '' ? '' : `${field}: `}${issue.message}`);
        }
      }
      continue;
    }
    const { title, context, questions } = result.data;
    passages[i] = { id: i, title, context, questions };
    raw[i] = undefined; // release the unvalidated record now that a typed copy exists
  }
  if (problemCount > 0) {
    const more = problemCount > problems.length ? `\n(and ${problemCount - problems.length} more problems)` : '';
    throw new SquadDataError(problems.join('\n') + more);
  }
  return passages;
}

/** Reads and validates a SEAL SQuAD file (path or file: URL). */
export async function loadSquadFile(file: string | URL): Promise<SquadPassage[]> {
  const path = typeof file === 'string' ? file : fileURLToPath(file);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new SquadDataError(`${path}: cannot read: ${(err as Error).message}`);
  }
  return parseSquadJson(text, path);
}

/** Total number of questions over the passages. */
export function countQuestions(passages: readonly SquadPassage[]): number {
  let n = 0;
  for (const p of passages) n += p.questions.length;
  return n;
}
