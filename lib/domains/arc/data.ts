// Loader for ARC-AGI data in the Kaggle "ARC Prize 2024" JSON format (reference §4.1):
//   *_challenges.json : { task id: { train: [{input, output}], test: [{input}] } }
//   *_solutions.json  : { task id: [output grid per test input] }
// The SEAL filtered subsets (`*_filtered_1B_*_set.json`, 12 training and 10 evaluation tasks) use
// exactly the same two shapes, so one loader serves all four splits.
//
// Everything is validated (zod for the structure, a grid check with precise messages) and a bad file
// fails with an ArcDataError naming the file, the task id and the path inside the task, e.g.
//   arc-agi_training_challenges.json: task 007bbfb7: train[2].output: row 1 has 4 cells, expected 3
//
// Task order is the file's own key order. JSON.parse cannot give it: it moves integer-like keys
// (ARC ids such as 59341089 — one of the filtered eval tasks) to the front. The reference selects
// tasks by list position (§4.1 `--n_tasks`, `--num_examples`), so order matters and is recovered here
// with a small scan of the top-level keys.

import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { MAX_GRID_SIDE, type ArcExample, type Grid } from './grid.js';

/** A task with its test outputs joined in from the solutions file. */
export interface ArcTask {
  id: string;
  train: ArcExample[];
  test: ArcExample[];
}

/** A challenge before its solutions are known. */
export interface ArcChallenge {
  id: string;
  train: ArcExample[];
  testInputs: Grid[];
}

/**
 * One test input of a task with the task's demonstrations — the unit the reference trains and
 * evaluates (§4.1: tasks with several test inputs are split into `<id>-<i>`).
 */
export interface ArcSubtask {
  /** The task id for a single-test task, `<task id>-<i>` otherwise (the reference's naming). */
  name: string;
  taskId: string;
  index: number;
  train: ArcExample[];
  test: ArcExample;
}

export class ArcDataError extends Error {
  readonly file: string;
  readonly taskId: string | undefined;
  readonly path: string | undefined;
  constructor(file: string, detail: string, taskId?: string, path?: string) {
    const where = [file, taskId !== undefined ? `task ${taskId}` : undefined, path || undefined]
      .filter((s): s is string => s !== undefined)
      .join(': ');
    super(`${where}: ${detail}`);
    this.name = 'ArcDataError';
    this.file = file;
    this.taskId = taskId;
    this.path = path;
  }
}

// ---------------------------------------------------------------------------------------------
// Validation

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 20 ? `${v.slice(0, 20)}…` : v)}`;
  if (typeof v === 'number') return String(v);
  return typeof v;
}

/** The first problem with a would-be grid, phrased for a person, or null when it is a valid grid. */
export function gridProblem(v: unknown): string | null {
  if (!Array.isArray(v)) return `expected a grid (an array of rows), got ${describe(v)}`;
  if (v.length === 0) return 'grid has no rows';
  if (v.length > MAX_GRID_SIDE) return `grid has ${v.length} rows, at most ${MAX_GRID_SIDE} allowed`;
  const first: unknown = v[0];
  if (!Array.isArray(first)) return `row 0 is ${describe(first)}, expected an array of cells`;
  const w = first.length;
  if (w === 0) return 'row 0 has no cells';
  if (w > MAX_GRID_SIDE) return `row 0 has ${w} cells, at most ${MAX_GRID_SIDE} allowed`;
  for (let r = 0; r < v.length; r++) {
    const row: unknown = v[r];
    if (!Array.isArray(row)) return `row ${r} is ${describe(row)}, expected an array of cells`;
    if (row.length !== w) return `row ${r} has ${row.length} cells, expected ${w}`;
    for (let c = 0; c < w; c++) {
      const x: unknown = row[c];
      if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || x > 9) {
        return `row ${r} column ${c} is ${describe(x)}, expected an integer colour 0–9`;
      }
    }
  }
  return null;
}

const gridSchema = z
  .unknown()
  .superRefine((v, ctx) => {
    const p = gridProblem(v);
    if (p !== null) ctx.addIssue({ code: 'custom', message: p });
  })
  .transform((v) => v as Grid);

const exampleSchema = z.strictObject({ input: gridSchema, output: gridSchema });
const testInputSchema = z.strictObject({ input: gridSchema });
const challengeSchema = z.strictObject({
  train: z.array(exampleSchema).min(1, 'a task needs at least one demonstration'),
  test: z.array(testInputSchema).min(1, 'a task needs at least one test input'),
});
const solutionSchema = z.array(gridSchema).min(1, 'expected at least one solution grid');

/** Render a zod path inside a task: ['train', 2, 'output'] → "train[2].output"; [0] → "[0]". */
function formatPath(path: readonly PropertyKey[]): string {
  let s = '';
  for (const p of path) {
    if (typeof p === 'number') s += `[${p}]`;
    else s += s === '' ? String(p) : `.${String(p)}`;
  }
  return s;
}

function fail(file: string, taskId: string, error: z.ZodError): never {
  const issue = error.issues[0];
  if (!issue) throw new ArcDataError(file, 'invalid task', taskId);
  const more = error.issues.length > 1 ? ` (and ${error.issues.length - 1} more problem(s) in this task)` : '';
  throw new ArcDataError(file, issue.message + more, taskId, formatPath(issue.path));
}

// ---------------------------------------------------------------------------------------------
// Top-level key order

/**
 * Keys of a JSON text's top-level object, in file order. The text must already be valid JSON (it
 * is scanned after JSON.parse succeeded), so the scan only tracks strings and nesting depth.
 */
export function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        keys.push(JSON.parse(text.slice(i, j + 1)) as string);
        expectKey = false;
      }
      i = j;
    } else if (ch === '{' || ch === '[') {
      depth++;
      if (depth === 1 && ch === '{') expectKey = true;
    } else if (ch === '}' || ch === ']') {
      depth--;
    } else if (ch === ',' && depth === 1) {
      expectKey = true;
    }
  }
  return keys;
}

function parseTopObject(text: string, file: string): { obj: Record<string, unknown>; keys: string[] } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new ArcDataError(file, `invalid JSON: ${(e as Error).message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ArcDataError(file, `expected a JSON object mapping task id → task, got ${describe(parsed)}`);
  }
  const keys = topLevelKeys(text);
  const seen = new Set<string>();
  for (const k of keys) {
    if (k === '') throw new ArcDataError(file, 'empty task id');
    if (seen.has(k)) throw new ArcDataError(file, 'duplicate task id (the later entry would silently win)', k);
    seen.add(k);
  }
  return { obj: parsed as Record<string, unknown>, keys };
}

// ---------------------------------------------------------------------------------------------
// Parsing

/** Parse a `*_challenges.json` text. `file` names the file in error messages. */
export function parseChallenges(text: string, file: string): ArcChallenge[] {
  const { obj, keys } = parseTopObject(text, file);
  return keys.map((id) => {
    const r = challengeSchema.safeParse(obj[id]);
    if (!r.success) fail(file, id, r.error);
    return { id, train: r.data.train, testInputs: r.data.test.map((t) => t.input) };
  });
}

/** Parse a `*_solutions.json` text: task id → one output grid per test input, in file order. */
export function parseSolutions(text: string, file: string): Map<string, Grid[]> {
  const { obj, keys } = parseTopObject(text, file);
  const out = new Map<string, Grid[]>();
  for (const id of keys) {
    const r = solutionSchema.safeParse(obj[id]);
    if (!r.success) fail(file, id, r.error);
    out.set(id, r.data);
  }
  return out;
}

/**
 * Join challenges with their solutions. Every challenge needs a solution with one grid per test
 * input, and every solution needs its challenge (a mismatch means the wrong pair of files).
 */
export function joinSolutions(
  challenges: readonly ArcChallenge[],
  solutions: ReadonlyMap<string, Grid[]>,
  files: { challenges: string; solutions: string },
): ArcTask[] {
  const ids = new Set(challenges.map((c) => c.id));
  for (const id of solutions.keys()) {
    if (!ids.has(id)) throw new ArcDataError(files.solutions, `has a solution but no challenge in ${files.challenges}`, id);
  }
  return challenges.map((c) => {
    const sol = solutions.get(c.id);
    if (!sol) throw new ArcDataError(files.solutions, `no solution for this task of ${files.challenges}`, c.id);
    if (sol.length !== c.testInputs.length) {
      throw new ArcDataError(
        files.solutions,
        `${sol.length} solution grid(s) for ${c.testInputs.length} test input(s) in ${files.challenges}`,
        c.id,
      );
    }
    return {
      id: c.id,
      train: c.train,
      test: c.testInputs.map((input, i) => ({ input, output: sol[i]! })),
    };
  });
}

// ---------------------------------------------------------------------------------------------
// Files

/** The reference's file names per split (reference §4.1 table). */
export const ARC_SPLITS = {
  training: {
    challenges: 'arc-agi_training_challenges.json',
    solutions: 'arc-agi_training_solutions.json',
  },
  evaluation: {
    challenges: 'arc-agi_evaluation_challenges.json',
    solutions: 'arc-agi_evaluation_solutions.json',
  },
  /** The 12 training tasks SEAL trains its self-edit policy on. */
  'training-filtered': {
    challenges: 'arc-agi_training_challenges_filtered_1B_training_set.json',
    solutions: 'arc-agi_training_solutions_filtered_1B_training_set.json',
  },
  /** The 10 evaluation tasks SEAL reports on. */
  'evaluation-filtered': {
    challenges: 'arc-agi_evaluation_challenges_filtered_1B_eval_set.json',
    solutions: 'arc-agi_evaluation_solutions_filtered_1B_eval_set.json',
  },
} as const;

export type ArcSplit = keyof typeof ARC_SPLITS;

function toPath(p: string | URL): string {
  return typeof p === 'string' ? p : fileURLToPath(p);
}

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ArcDataError(basename(path), code === 'ENOENT' ? 'file not found' : `cannot read: ${(e as Error).message}`);
  }
}

/** Load a challenges file and its solutions file. Errors name the file by its base name. */
export async function loadArcTasks(challengesPath: string | URL, solutionsPath: string | URL): Promise<ArcTask[]> {
  const cPath = toPath(challengesPath);
  const sPath = toPath(solutionsPath);
  const files = { challenges: basename(cPath), solutions: basename(sPath) };
  // Both reads settle before either error is thrown, so a directory missing both files always
  // reports the challenges file (Promise.all would report whichever read failed first).
  const [c, sol] = await Promise.allSettled([readText(cPath), readText(sPath)]);
  if (c.status === 'rejected') throw c.reason;
  if (sol.status === 'rejected') throw sol.reason;
  return joinSolutions(parseChallenges(c.value, files.challenges), parseSolutions(sol.value, files.solutions), files);
}

/** Load one of the reference's four splits from a directory holding the SEAL `few-shot/data` files. */
export async function loadArcSplit(dir: string | URL, split: ArcSplit): Promise<ArcTask[]> {
  const base = toPath(dir);
  const f = ARC_SPLITS[split];
  const join = (name: string) => (base.endsWith('/') ? base + name : `${base}/${name}`);
  return loadArcTasks(join(f.challenges), join(f.solutions));
}

/**
 * Split a task into one sub-task per test input (reference §4.1). As in the reference's listings
 * (e.g. "903d1b4a", "b1fc8b8e-0", "b1fc8b8e-1"), only tasks with several test inputs get a suffix.
 */
export function splitSubtasks(task: ArcTask): ArcSubtask[] {
  return task.test.map((test, index) => ({
    name: task.test.length > 1 ? `${task.id}-${index}` : task.id,
    taskId: task.id,
    index,
    train: task.train,
    test,
  }));
}
