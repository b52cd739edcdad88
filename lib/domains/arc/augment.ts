// The reference's grid augmenters (reference §4.4, from `few-shot/arclib/augmenters.py` of
// ekinakyurek/marc), each with an inverse, and their consistent application to whole tasks.
//
// Families, in the reference's order (`self-edit.py: get_augmenters`):
//   basic  (11): Rotate(90), Rotate(270), Rotate(180), Flip(0), Flip(1),
//                Reflect(0, reverse=True), Reflect(1, reverse=True), Reflect(0, reverse=False),
//                Reflect(1, reverse=False), RandomTranslateXY(), Transpose()
//   size    (3): IncreaseResolution(2), IncreaseHeight(2), IncreaseWidth(2)
//   chain   (6): {Rotate(90), Rotate(270), Rotate(180), Flip(0), Flip(1), Transpose()} then
//                IncreaseResolution(2)
//   repeat  (3): Repeat(0, 2), Repeat(1, 2), Repeat(2, 2)
//   concat  (2): identity ⧺ Rotate(180) along rows / columns — exists, never enabled by SEAL.
// All four SEAL families on = 23 augmenters.
//
// Semantics follow NumPy exactly: `Rotate(k·90)` is `np.rot90(grid, k)` (counter-clockwise),
// `Flip(0)` is `np.flipud`, `Flip(1)` is `np.fliplr`, `Transpose` is `np.transpose`.
//
// `inverse(grid)` undoes `apply`. For the bijections (rotations, flips, transpose, translation,
// colour maps) it is total. For the size-changing augmenters it returns null when the grid is not in
// the image of `apply` (wrong dimensions, non-uniform blocks, tiles or mirror halves that disagree),
// so a prediction that cannot have come from the augmented task is recognisably invalid rather than
// silently cropped.

import {
  cell,
  height,
  makeGrid,
  randomIndex,
  shuffleInPlace,
  width,
  gridsEqual,
  type ArcExample,
  type Grid,
  type PseudoTask,
} from './grid.js';

/** Which side of an example a grid is on. Only RandomTranslateXY treats the two differently. */
export type GridRole = 'input' | 'output';

export interface Augmenter {
  /** The reference's `str()` of the augmenter, e.g. `Rotate(90)` or `Chain([Flip(0), IncreaseResolution(2)])`. */
  readonly name: string;
  /** For bijections: the reference's name of the inverse (`inverse()` in augmenters.py), e.g. Rotate(90) → `Rotate(270)`. */
  readonly inverseName?: string;
  apply(grid: Grid, role?: GridRole): Grid;
  /** Undo `apply`; null when `grid` cannot be an output of `apply`. */
  inverse(grid: Grid, role?: GridRole): Grid | null;
}

// ---------------------------------------------------------------------------------------------
// Grid operations (NumPy semantics)

/** `np.rot90(g, 1)`: counter-clockwise quarter turn. out[i][j] = g[j][W-1-i], shape W×H. */
export function rot90(g: Grid): Grid {
  const h = height(g);
  const w = width(g);
  return makeGrid(w, h, (i, j) => cell(g, j, w - 1 - i));
}

export function rotate(g: Grid, quarterTurns: number): Grid {
  let out = g;
  const k = ((quarterTurns % 4) + 4) % 4;
  for (let i = 0; i < k; i++) out = rot90(out);
  return k === 0 ? g.map((r) => r.slice()) : out;
}

/** `np.flipud`. */
export function flipUD(g: Grid): Grid {
  return g.map((_, i) => g[g.length - 1 - i]!.slice());
}

/** `np.fliplr`. */
export function flipLR(g: Grid): Grid {
  return g.map((row) => row.slice().reverse());
}

/** `np.transpose`. */
export function transpose(g: Grid): Grid {
  return makeGrid(width(g), height(g), (i, j) => cell(g, j, i));
}

/** `np.roll(g, (dr, dc), axis=(0, 1))`. */
export function roll(g: Grid, dr: number, dc: number): Grid {
  const h = height(g);
  const w = width(g);
  const mr = ((dr % h) + h) % h;
  const mc = ((dc % w) + w) % w;
  return makeGrid(h, w, (i, j) => cell(g, (i - mr + h) % h, (j - mc + w) % w));
}

/** `np.concatenate(parts, axis)`; axis 0 stacks vertically, axis 1 side by side. */
export function concat(parts: readonly Grid[], axis: 0 | 1): Grid {
  if (axis === 0) return parts.flatMap((p) => p.map((r) => r.slice()));
  const h = height(parts[0]!);
  return Array.from({ length: h }, (_, i) => parts.flatMap((p) => p[i]!));
}

/** `np.repeat(g, f, axis)`: each row (axis 0) or column (axis 1) repeated f times in place. */
export function repeatCells(g: Grid, f: number, axis: 0 | 1): Grid {
  if (axis === 0) return makeGrid(height(g) * f, width(g), (i, j) => cell(g, Math.floor(i / f), j));
  return makeGrid(height(g), width(g) * f, (i, j) => cell(g, i, Math.floor(j / f)));
}

/** Inverse of `repeatCells`: null unless every run of f rows/columns is identical. */
export function unrepeatCells(g: Grid, f: number, axis: 0 | 1): Grid | null {
  const h = height(g);
  const w = width(g);
  if (axis === 0) {
    if (h % f !== 0) return null;
    const out = makeGrid(h / f, w, (i, j) => cell(g, i * f, j));
    return gridsEqual(repeatCells(out, f, 0), g) ? out : null;
  }
  if (w % f !== 0) return null;
  const out = makeGrid(h, w / f, (i, j) => cell(g, i, j * f));
  return gridsEqual(repeatCells(out, f, 1), g) ? out : null;
}

/** Split along an axis into `n` equal parts, or null when the size does not divide. */
function split(g: Grid, n: number, axis: 0 | 1): Grid[] | null {
  const h = height(g);
  const w = width(g);
  const size = axis === 0 ? h : w;
  if (size % n !== 0) return null;
  const k = size / n;
  const parts: Grid[] = [];
  for (let p = 0; p < n; p++) {
    parts.push(axis === 0 ? g.slice(p * k, (p + 1) * k).map((r) => r.slice()) : g.map((r) => r.slice(p * k, (p + 1) * k)));
  }
  return parts;
}

// ---------------------------------------------------------------------------------------------
// Augmenters

function bijection(name: string, inverseName: string, f: (g: Grid) => Grid, finv: (g: Grid) => Grid): Augmenter {
  return { name, inverseName, apply: (g) => f(g), inverse: (g) => finv(g) };
}

export function identityAugmenter(): Augmenter {
  return bijection('IdentityAugmenter()', 'IdentityAugmenter()', (g) => g.map((r) => r.slice()), (g) => g.map((r) => r.slice()));
}

/** `Rotate(angle)`: counter-clockwise by 90, 180 or 270 degrees (`np.rot90`). */
export function rotateAugmenter(angle: 90 | 180 | 270): Augmenter {
  const k = angle / 90;
  return bijection(`Rotate(${angle})`, `Rotate(${360 - angle})`, (g) => rotate(g, k), (g) => rotate(g, 4 - k));
}

/** `Flip(0)` = flip up-down, `Flip(1)` = flip left-right. Self-inverse. */
export function flipAugmenter(axis: 0 | 1): Augmenter {
  const f = axis === 0 ? flipUD : flipLR;
  return bijection(`Flip(${axis})`, `Flip(${axis})`, f, f);
}

export function transposeAugmenter(): Augmenter {
  return bijection('Transpose()', 'Transpose()', transpose, transpose);
}

/**
 * `Reflect(axis, reverse)`: the grid concatenated with its mirror image along `axis`; mirrored copy
 * first when `reverse`. Inverse: the original half, when the other half is its mirror.
 */
export function reflectAugmenter(axis: 0 | 1, reverse: boolean): Augmenter {
  const mirror = axis === 0 ? flipUD : flipLR;
  return {
    name: `Reflect(${axis}, reverse=${reverse ? 'True' : 'False'})`,
    apply: (g) => concat(reverse ? [mirror(g), g] : [g, mirror(g)], axis),
    inverse: (g) => {
      const halves = split(g, 2, axis);
      if (!halves) return null;
      const [a, b] = halves as [Grid, Grid];
      const orig = reverse ? b : a;
      const other = reverse ? a : b;
      return gridsEqual(mirror(orig), other) ? orig : null;
    },
  };
}

/** `Repeat(axis, n)`: tile n times vertically (axis 0), horizontally (1), or n×n (2). */
export function repeatAugmenter(axis: 0 | 1 | 2, n: number): Augmenter {
  const tile = (g: Grid): Grid => {
    if (axis === 2) {
      const col = concat(new Array<Grid>(n).fill(g), 0);
      return concat(new Array<Grid>(n).fill(col), 1);
    }
    return concat(new Array<Grid>(n).fill(g), axis);
  };
  return {
    name: `Repeat(${axis}, ${n})`,
    apply: tile,
    inverse: (g) => {
      const h = height(g);
      const w = width(g);
      const th = axis === 1 ? h : h / n;
      const tw = axis === 0 ? w : w / n;
      if (!Number.isInteger(th) || !Number.isInteger(tw)) return null;
      const t = makeGrid(th, tw, (i, j) => cell(g, i, j));
      return gridsEqual(tile(t), g) ? t : null;
    },
  };
}

/** `IncreaseResolution(f)`: every cell becomes an f×f block. */
export function increaseResolutionAugmenter(f: number): Augmenter {
  return {
    name: `IncreaseResolution(${f})`,
    apply: (g) => repeatCells(repeatCells(g, f, 0), f, 1),
    inverse: (g) => {
      const rows = unrepeatCells(g, f, 0);
      return rows && unrepeatCells(rows, f, 1);
    },
  };
}

/** `IncreaseHeight(f)`: every row repeated f times. */
export function increaseHeightAugmenter(f: number): Augmenter {
  return { name: `IncreaseHeight(${f})`, apply: (g) => repeatCells(g, f, 0), inverse: (g) => unrepeatCells(g, f, 0) };
}

/** `IncreaseWidth(f)`: every column repeated f times. */
export function increaseWidthAugmenter(f: number): Augmenter {
  return { name: `IncreaseWidth(${f})`, apply: (g) => repeatCells(g, f, 1), inverse: (g) => unrepeatCells(g, f, 1) };
}

/** `Chain([a, b, ...])`: apply in order; inverse undoes in reverse order. */
export function chainAugmenter(parts: readonly Augmenter[]): Augmenter {
  return {
    name: `Chain([${parts.map((p) => p.name).join(', ')}])`,
    apply: (g, role) => parts.reduce((acc, p) => p.apply(acc, role), g),
    inverse: (g, role) => {
      let acc: Grid | null = g;
      for (let i = parts.length - 1; i >= 0 && acc !== null; i--) acc = parts[i]!.inverse(acc, role);
      return acc;
    },
  };
}

/** `Concat((a, b), axis)`: the two augmented copies side by side; the reference uses identity ⧺ Rotate(180). */
export function concatAugmenter(a: Augmenter, b: Augmenter, axis: 0 | 1): Augmenter {
  return {
    name: `Concat((${a.name}, ${b.name}), axis=${axis})`,
    apply: (g, role) => concat([a.apply(g, role), b.apply(g, role)], axis),
    inverse: (g, role) => {
      // Only shape-preserving parts make the split point knowable; that covers the reference's use.
      const halves = split(g, 2, axis);
      if (!halves) return null;
      const orig = a.inverse(halves[0]!, role);
      if (!orig) return null;
      return gridsEqual(concat([a.apply(orig, role), b.apply(orig, role)], axis), g) ? orig : null;
    },
  };
}

/**
 * `RandomTranslateXY()`: cyclic shift (`np.roll`) by (randint(0, min(4, H)), randint(0, min(4, W))).
 *
 * The reference gives every example (and the test pair) its own copy of one RNG state and draws the
 * input's shift, then the output's, from that copy, without advancing the task-level RNG (§4.4).
 * So within one construction all inputs share one draw and all outputs another, each scaled to the
 * grid's own size. Here those four uniforms are drawn once, when the augmenter is made; the shift
 * of a grid is floor(u · min(4, side)) with the input or output pair of uniforms by role.
 */
export function randomTranslateAugmenter(rng: () => number): Augmenter {
  const input = [rng(), rng()] as const;
  const output = [rng(), rng()] as const;
  const shift = (g: Grid, role: GridRole = 'input'): [number, number] => {
    const [ur, uc] = role === 'input' ? input : output;
    // randint(0, min(4, side)) — the clamp guards a source that returns exactly 1.0.
    const dr = Math.min(Math.floor(ur * Math.min(4, height(g))), height(g) - 1);
    const dc = Math.min(Math.floor(uc * Math.min(4, width(g))), width(g) - 1);
    return [dr, dc];
  };
  return {
    name: 'RandomTranslateXY()',
    apply: (g, role) => {
      const [dr, dc] = shift(g, role);
      return roll(g, dr, dc);
    },
    // A roll keeps the shape, so the shift is recomputed from the grid being inverted.
    inverse: (g, role) => {
      const [dr, dc] = shift(g, role);
      return roll(g, -dr, -dc);
    },
  };
}

/** A colour substitution (reference `PermuteColorswithMap`); `map[c]` is the new colour of c. */
export function colorMapAugmenter(map: readonly number[]): Augmenter {
  if (map.length !== 10 || new Set(map).size !== 10 || map.some((c) => !Number.isInteger(c) || c < 0 || c > 9)) {
    throw new RangeError(`colour map must be a permutation of 0–9, got [${map.join(', ')}]`);
  }
  const inv = new Array<number>(10);
  map.forEach((to, from) => (inv[to] = from));
  const sub = (m: readonly number[]) => (g: Grid) => g.map((row) => row.map((c) => m[c] ?? c));
  const entries = map.map((to, from) => `${from}: ${to}`).join(', ');
  return { name: `PermuteColorswithMap({${entries}})`, apply: sub(map), inverse: sub(inv) };
}

// ---------------------------------------------------------------------------------------------
// Families

export interface AugmentationFamilies {
  basic: boolean;
  size: boolean;
  chain: boolean;
  repeat: boolean;
  /** Never enabled by SEAL (not controllable by a self-edit); kept for completeness. */
  concat?: boolean;
}

export function basicAugmenters(rng: () => number): Augmenter[] {
  return [
    rotateAugmenter(90),
    rotateAugmenter(270),
    rotateAugmenter(180),
    flipAugmenter(0),
    flipAugmenter(1),
    reflectAugmenter(0, true),
    reflectAugmenter(1, true),
    reflectAugmenter(0, false),
    reflectAugmenter(1, false),
    randomTranslateAugmenter(rng),
    transposeAugmenter(),
  ];
}

export function sizeAugmenters(): Augmenter[] {
  return [increaseResolutionAugmenter(2), increaseHeightAugmenter(2), increaseWidthAugmenter(2)];
}

export function chainAugmenters(): Augmenter[] {
  const up = increaseResolutionAugmenter(2);
  return [
    rotateAugmenter(90),
    rotateAugmenter(270),
    rotateAugmenter(180),
    flipAugmenter(0),
    flipAugmenter(1),
    transposeAugmenter(),
  ].map((a) => chainAugmenter([a, up]));
}

export function repeatAugmenters(): Augmenter[] {
  return [repeatAugmenter(0, 2), repeatAugmenter(1, 2), repeatAugmenter(2, 2)];
}

export function concatAugmenters(): Augmenter[] {
  return [
    concatAugmenter(identityAugmenter(), rotateAugmenter(180), 0),
    concatAugmenter(identityAugmenter(), rotateAugmenter(180), 1),
  ];
}

/**
 * The enabled augmenters in the reference's order: basic, size, concat, chain, repeat
 * (`get_augmenters`). `rng` is consumed only when `basic` is on (four draws for RandomTranslateXY).
 */
export function getAugmenters(families: AugmentationFamilies, rng: () => number): Augmenter[] {
  return [
    ...(families.basic ? basicAugmenters(rng) : []),
    ...(families.size ? sizeAugmenters() : []),
    ...(families.concat ? concatAugmenters() : []),
    ...(families.chain ? chainAugmenters() : []),
    ...(families.repeat ? repeatAugmenters() : []),
  ];
}

// ---------------------------------------------------------------------------------------------
// Task level

/** Apply one augmenter to both grids of an example (input with role 'input', output with 'output'). */
export function augmentExample(e: ArcExample, aug: Augmenter): ArcExample {
  return { input: aug.apply(e.input, 'input'), output: aug.apply(e.output, 'output') };
}

/** Apply one augmenter to every grid of a task — inputs and outputs, test pair included (§4.4). */
export function augmentTask(task: PseudoTask, aug: Augmenter): PseudoTask {
  const test: PseudoTask['test'] = { input: aug.apply(task.test.input, 'input') };
  if (task.test.output !== undefined) test.output = aug.apply(task.test.output, 'output');
  return { train: task.train.map((e) => augmentExample(e, aug)), test };
}

/** Reference `PermuteExamples`: a random order of the demonstrations (the test pair stays). */
export function permuteExamples(task: PseudoTask, rng: () => number): PseudoTask {
  return { train: shuffleInPlace(task.train.slice(), rng), test: task.test };
}

/**
 * Reference `PermuteColors` colour map for a task: 0 stays; every other colour used anywhere in the
 * task (pseudo-test output included) goes to a random colour from 1–9 unused by the task while any
 * remain, after which colours are swapped pairwise with a random partner. Returns `map[c]`.
 * Colours are visited in ascending order (the reference iterates a Python set of small ints).
 */
export function permuteColorsMap(task: PseudoTask, rng: () => number): number[] {
  const used = new Set<number>();
  const see = (g: Grid | undefined) => g?.forEach((row) => row.forEach((c) => used.add(c)));
  for (const e of task.train) {
    see(e.input);
    see(e.output);
  }
  see(task.test.input);
  see(task.test.output);
  used.delete(0);
  const colors = [...used].sort((a, b) => a - b);
  const remaining = shuffleInPlace([1, 2, 3, 4, 5, 6, 7, 8, 9].filter((c) => !used.has(c)), rng);
  const permuted = shuffleInPlace(colors.slice(), rng);
  const map = new Map<number, number>([[0, 0]]);
  for (const color of colors) {
    if (map.has(color)) continue;
    let next: number;
    if (remaining.length > 0) {
      next = remaining.pop()!;
    } else {
      next = permuted.pop()!;
      // Swap: the colour being replaced takes this one's place.
      map.set(next, color);
      const at = permuted.indexOf(color);
      if (at >= 0) permuted.splice(at, 1);
    }
    map.set(color, next);
  }
  const out = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  for (const [from, to] of map) out[from] = to;
  // The reference's overwrite case (a swap partner that already had a fresh colour) can leave a
  // fresh colour unused; fill the image up to a full permutation of 0–9 without touching used colours.
  const targets = new Set<number>();
  for (const c of [0, ...colors]) targets.add(out[c]!);
  const free = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].filter((c) => !targets.has(c));
  for (let c = 0; c < 10; c++) if (c !== 0 && !used.has(c)) out[c] = free.shift()!;
  return out;
}

/** Apply a random reference-style colour permutation to the whole task. */
export function permuteColors(task: PseudoTask, rng: () => number): { task: PseudoTask; augmenter: Augmenter } {
  const augmenter = colorMapAugmenter(permuteColorsMap(task, rng));
  return { task: augmentTask(task, augmenter), augmenter };
}

/** Pick a uniformly random element (reference `rng.choice`). */
export function choice<T>(xs: readonly T[], rng: () => number): T {
  if (xs.length === 0) throw new RangeError('choice from an empty list');
  return xs[randomIndex(rng, xs.length)]!;
}
