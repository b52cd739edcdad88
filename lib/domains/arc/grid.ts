// The ARC grid value type and the few structural helpers every other ARC module shares.
//
// A grid is a non-empty rectangular matrix of colours 0–9, at most 30×30 (reference §4.1). Grids are
// plain `number[][]` so they round-trip through JSON unchanged; helpers never mutate their input.

export type Grid = number[][];

/** One input/output pair (a demonstration, or a test pair once its solution is known). */
export interface ArcExample {
  input: Grid;
  output: Grid;
}

/**
 * A few-shot problem in the reference's `Task` shape: demonstrations plus one query example.
 * `test.output` is absent for a real test input at inference time; in TTT pseudo-tasks it is the
 * held-out demonstration's output (reference §4.4).
 */
export interface PseudoTask {
  train: ArcExample[];
  test: { input: Grid; output?: Grid };
}

/** ARC's size limit (reference §4.1; §4.4 step 2 drops augmented tasks beyond it). */
export const MAX_GRID_SIDE = 30;

export function height(g: Grid): number {
  return g.length;
}

export function width(g: Grid): number {
  return g[0]?.length ?? 0;
}

/** Cell access for grids already known to be rectangular (keeps noUncheckedIndexedAccess honest). */
export function cell(g: Grid, r: number, c: number): number {
  const v = g[r]?.[c];
  if (v === undefined) throw new RangeError(`cell (${r}, ${c}) outside a ${height(g)}×${width(g)} grid`);
  return v;
}

/** Build an h×w grid from a cell function. */
export function makeGrid(h: number, w: number, f: (r: number, c: number) => number): Grid {
  const out: Grid = new Array<number[]>(h);
  for (let r = 0; r < h; r++) {
    const row = new Array<number>(w);
    for (let c = 0; c < w; c++) row[c] = f(r, c);
    out[r] = row;
  }
  return out;
}

export function gridsEqual(a: Grid, b: Grid): boolean {
  if (a.length !== b.length) return false;
  for (let r = 0; r < a.length; r++) {
    const ra = a[r]!;
    const rb = b[r]!;
    if (ra.length !== rb.length) return false;
    for (let c = 0; c < ra.length; c++) if (ra[c] !== rb[c]) return false;
  }
  return true;
}

/**
 * Canonical string key of a grid (value identity for de-duplication and vote counting).
 * Rows joined by '|' and cells by ','; injective for integer grids.
 */
export function gridKey(g: Grid): string {
  return g.map((row) => row.join(',')).join('|');
}

/** Canonical key of a pseudo-task: the reference de-duplicates tasks by value (§4.4 steps 3–4). */
export function taskKey(t: PseudoTask): string {
  const ex = (e: { input: Grid; output?: Grid }) => `${gridKey(e.input)}>${e.output ? gridKey(e.output) : '?'}`;
  return `${t.train.map(ex).join(';')}#${ex(t.test)}`;
}

/** Largest height / width over every grid of a task, test pair included (reference `Task.max_height`). */
export function taskMaxSide(t: PseudoTask): number {
  let m = 0;
  const see = (g: Grid | undefined) => {
    if (g) m = Math.max(m, height(g), width(g));
  };
  for (const e of t.train) {
    see(e.input);
    see(e.output);
  }
  see(t.test.input);
  see(t.test.output);
  return m;
}

/** True for a non-empty rectangular grid of integers 0–9 within the 30×30 limit. */
export function isValidGrid(g: unknown): g is Grid {
  if (!Array.isArray(g) || g.length === 0 || g.length > MAX_GRID_SIDE) return false;
  const first: unknown = g[0];
  if (!Array.isArray(first)) return false;
  const w = first.length;
  if (w === 0 || w > MAX_GRID_SIDE) return false;
  for (const row of g as unknown[]) {
    if (!Array.isArray(row) || row.length !== w) return false;
    for (const v of row as unknown[]) {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 9) return false;
    }
  }
  return true;
}

/** Remove duplicates by key, keeping the first occurrence (a canonical order, unlike Python's set). */
export function dedupeBy<T>(items: readonly T[], key: (x: T) => string): T[] {
  const seen = new Set<string>();
  const out: T[] = [];
  for (const x of items) {
    const k = key(x);
    if (seen.has(k)) continue;
    seen.add(k);
    out.push(x);
  }
  return out;
}

/** Fisher–Yates shuffle (in place) driven by a uniform [0, 1) source. */
export function shuffleInPlace<T>(xs: T[], rng: () => number): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = randomIndex(rng, i + 1);
    const t = xs[i]!;
    xs[i] = xs[j]!;
    xs[j] = t;
  }
  return xs;
}

/** Uniform integer in [0, n) from a uniform [0, 1) source; clamps a source that returns 1.0. */
export function randomIndex(rng: () => number, n: number): number {
  const i = Math.floor(rng() * n);
  return i >= n ? n - 1 : i < 0 ? 0 : i;
}
