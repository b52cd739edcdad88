// Inference-side voting and scoring (reference §4.7, marc `arclib/voting.py` + `arclib/eval.py`).
//
// Each query's prediction is parsed (invalid ones dropped), mapped back through the inverse of the
// query's transform (predictions that cannot be inverted are dropped too), and grouped by that
// inverse — "identity" for untransformed views — plus an "all" group. Two voting rounds give the
// two attempts the ARC protocol allows:
//   round 1: each group, in the order all, identity, Transpose(), Flip(0), Flip(1), Rotate(180),
//            Rotate(270), contributes its top three (most frequent, 2nd, 3rd; missing ones filled
//            with a row-wise majority grid, then a column-wise majority grid);
//   round 2: the pooled candidates' top three; attempts = the 1st and the 2nd, except that when the
//            2nd and 3rd are tied in the pool, the one more frequent among identity predictions is
//            the 2nd attempt.
// A sub-task is solved when either attempt equals its solution exactly; a task is solved only when
// every one of its sub-tasks is (§4.7 "Scoring"); the reward of a self-edit is that task-level
// boolean (§4.8).
//
// Ties: the reference breaks frequency ties by Python set order and NumPy's unstable argsort, i.e.
// arbitrarily. Here every tie goes to the earliest occurrence (group order, then prediction order),
// so the vote is deterministic.

import { transpose as transposeGrid, type Augmenter } from './augment.js';
import { gridKey, gridsEqual, isValidGrid, type Grid } from './grid.js';
import { parseGrid } from './grid-format.js';

/** ARC allows two attempts per test input. */
export const ATTEMPTS = 2;

/** One model answer for one query view. */
export interface Prediction {
  /** The predicted grid for the (transformed) view, or null when the output did not parse. */
  grid: Grid | null;
  /** The transform applied to the view (null = untransformed). */
  augmenter: Augmenter | null;
}

/** Parse raw model text into a prediction for a view. */
export function predictionFromText(text: string, augmenter: Augmenter | null): Prediction {
  return { grid: parseGrid(text), augmenter };
}

export interface VoteResult {
  /** Up to two attempts (two entries whenever any prediction was valid; they may be equal). */
  attempts: Grid[];
  /** Valid predictions in the original frame, by group (the "all" group excluded). */
  groups: Map<string, Grid[]>;
  /** Number of predictions dropped (unparseable, invalid, or not invertible). */
  dropped: number;
}

/** Group order of the reference's first round, after "all" and "identity". */
const GROUP_ORDER = ['Transpose()', 'Flip(0)', 'Flip(1)', 'Rotate(180)', 'Rotate(270)'];

function groupName(aug: Augmenter | null): string {
  if (aug === null) return 'identity';
  return aug.inverseName ?? `inverse of ${aug.name}`;
}

/** Most frequent value with ties to the earliest occurrence. */
function mostCommon<T>(xs: readonly T[], key: (x: T) => string): T {
  const counts = new Map<string, { x: T; n: number }>();
  for (const x of xs) {
    const k = key(x);
    const c = counts.get(k);
    if (c) c.n++;
    else counts.set(k, { x, n: 1 });
  }
  let best: { x: T; n: number } | undefined;
  for (const c of counts.values()) if (!best || c.n > best.n) best = c;
  if (!best) throw new RangeError('mostCommon of an empty list');
  return best.x;
}

/**
 * Reference `row_base_majority_voting`: take the most common shape; row i of the result is the
 * most common row i among predictions whose row i has that shape's width. With `columns`, the same
 * on transposed grids, transposed back.
 */
export function majorityGrid(grids: readonly Grid[], columns = false): Grid {
  const gs = columns ? grids.map(transposeGrid) : grids.slice();
  const shape = mostCommon(
    gs.map((g) => [g.length, g[0]?.length ?? 0] as const),
    (s) => `${s[0]}x${s[1]}`,
  );
  const [h, w] = shape;
  const rows: number[][] = [];
  for (let i = 0; i < h; i++) {
    const candidates = gs.flatMap((g) => {
      const row = g[i];
      return row !== undefined && row.length === w ? [row] : [];
    });
    rows.push(mostCommon(candidates, (r) => r.join(',')).slice());
  }
  return columns ? transposeGrid(rows) : rows;
}

/** Reference `get_three_votes`: the three most frequent grids, gaps filled by majority grids. */
export function topThree(grids: readonly Grid[]): [Grid, Grid, Grid] {
  if (grids.length === 0) throw new RangeError('topThree of no grids');
  const counts = new Map<string, { g: Grid; n: number; first: number }>();
  grids.forEach((g, i) => {
    const k = gridKey(g);
    const c = counts.get(k);
    if (c) c.n++;
    else counts.set(k, { g, n: 1, first: i });
  });
  const ranked = [...counts.values()].sort((a, b) => b.n - a.n || a.first - b.first).map((c) => c.g);
  const c1 = ranked[0]!;
  let c2 = ranked[1] ?? c1;
  let c3 = ranked[2] ?? c1;
  const row = majorityGrid(grids, false);
  const col = majorityGrid(grids, true);
  if (gridsEqual(c2, c1)) c2 = gridsEqual(row, c1) ? col : row;
  if (gridsEqual(c3, c1) || gridsEqual(c3, c2)) c3 = gridsEqual(row, c1) || gridsEqual(row, c2) ? col : row;
  return [c1, c2, c3];
}

function countIn(grids: readonly Grid[], g: Grid): number {
  let n = 0;
  for (const x of grids) if (gridsEqual(x, g)) n++;
  return n;
}

/** Vote over the predictions of all query views of one sub-task (reference `vote`). */
export function vote(predictions: readonly Prediction[]): VoteResult {
  const groups = new Map<string, Grid[]>();
  let dropped = 0;
  for (const p of predictions) {
    if (p.grid === null || !isValidGrid(p.grid)) {
      dropped++;
      continue;
    }
    let g: Grid | null = p.grid;
    if (p.augmenter !== null) {
      try {
        g = p.augmenter.inverse(p.grid, 'output');
      } catch {
        g = null;
      }
    }
    if (g === null || !isValidGrid(g)) {
      dropped++;
      continue;
    }
    const name = groupName(p.augmenter);
    const list = groups.get(name);
    if (list) list.push(g);
    else groups.set(name, [g]);
  }

  const order = [
    'identity',
    ...GROUP_ORDER,
    ...[...groups.keys()].filter((k) => k !== 'identity' && !GROUP_ORDER.includes(k)),
  ].filter((k) => groups.has(k));
  if (order.length === 0) return { attempts: [], groups, dropped };

  const all = order.flatMap((k) => groups.get(k)!);
  const candidates = [all, ...order.map((k) => groups.get(k)!)].flatMap((gs) => topThree(gs));
  const [c1, c2, c3] = topThree(candidates);
  let second = c2;
  const identity = groups.get('identity');
  if (identity && countIn(candidates, c2) === countIn(candidates, c3) && countIn(identity, c2) < countIn(identity, c3)) {
    second = c3;
  }
  return { attempts: [c1, second], groups, dropped };
}

/** A sub-task is solved when any of its (at most two) attempts equals the solution exactly. */
export function isSolved(attempts: readonly Grid[], solution: Grid): boolean {
  return attempts.slice(0, ATTEMPTS).some((a) => gridsEqual(a, solution));
}

/**
 * Task-level correctness (§4.7): every sub-task submitted and solved. `attempts[i]` are the
 * attempts for test input i; a missing entry (no valid prediction, or no adapter) fails the task.
 */
export function isTaskSolved(attempts: readonly (readonly Grid[] | undefined)[], solutions: readonly Grid[]): boolean {
  if (solutions.length === 0) return false;
  return solutions.every((s, i) => {
    const a = attempts[i];
    return a !== undefined && isSolved(a, s);
  });
}

/** The self-edit reward (§4.8): 1 when the adapted model solves the task, else 0. */
export function arcReward(attempts: readonly (readonly Grid[] | undefined)[], solutions: readonly Grid[]): 0 | 1 {
  return isTaskSolved(attempts, solutions) ? 1 : 0;
}
