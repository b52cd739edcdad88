// The toy knowledge world behind `seal demo`: invented people with attributes (home town, job, pet,
// favourite colour, favourite food, age) and relations (sibling, best friend, mentor), passages that
// state 4–6 facts about one person in varied phrasings, and questions with one- or two-word answers.
//
// Names are two syllables from a fixed list of 40 ("Balnor", "Mirtev"), so a closed word-level
// vocabulary covers every name of every world: the tokenizer splits a name into its syllables and
// a held-out name is a new combination of syllables the model has seen. Each possible name belongs
// to exactly one split (pretrain / rl / eval, by a hash of the name), so worlds of different
// splits never share a person, whatever their seeds: nothing evaluated is seen in pretraining.
//
// All randomness comes from the project's seeded Rng: the same (seed, options) give the same world.
import { rngU32, Rng } from '../../util/rng.js';

export const SYLLABLES = [
  'bal', 'ben', 'dor', 'fin', 'gal', 'kor', 'lin', 'mar', 'nel', 'pol',
  'ras', 'sen', 'tor', 'vin', 'zel', 'bor', 'dan', 'fel', 'gin', 'kal',
  'lom', 'mir', 'nor', 'pen', 'ril', 'sol', 'tam', 'ven', 'zor', 'bis',
  'dul', 'fom', 'gus', 'kes', 'lar', 'mon', 'nik', 'pas', 'rum', 'tev',
] as const;

export const TOWNS = [
  'Ashford', 'Brightwater', 'Coldbrook', 'Deepdale', 'Elmstead', 'Foxhill', 'Greywick', 'Highmoor',
  'Ironbridge', 'Kingsbury', 'Longmere', 'Millbrook', 'Northgate', 'Oakridge', 'Redcliff', 'Stonefield',
] as const;
export const JOBS = [
  'baker', 'farmer', 'teacher', 'doctor', 'painter', 'sailor', 'miner', 'tailor',
  'potter', 'weaver', 'hunter', 'singer', 'builder', 'gardener', 'fisher', 'writer',
] as const;
export const PETS = ['cat', 'dog', 'parrot', 'rabbit', 'goat', 'horse', 'turtle', 'hamster', 'lizard', 'duck', 'pig', 'ferret'] as const;
export const COLOURS = ['red', 'blue', 'green', 'yellow', 'purple', 'orange', 'white', 'black', 'grey', 'pink', 'brown', 'silver'] as const;
export const FOODS = ['bread', 'soup', 'rice', 'cheese', 'apples', 'fish', 'honey', 'noodles', 'beans', 'cake', 'plums', 'nuts'] as const;
export const AGES: readonly string[] = Array.from({ length: 50 }, (_, i) => String(20 + i));

export type AttrKey = 'town' | 'job' | 'pet' | 'colour' | 'food' | 'age';
export type RelKey = 'sibling' | 'friend' | 'mentor';
export type FactKey = AttrKey | RelKey;
export const ATTR_KEYS: readonly AttrKey[] = ['town', 'job', 'pet', 'colour', 'food', 'age'];
export const REL_KEYS: readonly RelKey[] = ['sibling', 'friend', 'mentor'];
export const ATTR_VALUES: Record<AttrKey, readonly string[]> = { town: TOWNS, job: JOBS, pet: PETS, colour: COLOURS, food: FOODS, age: AGES };

export type Split = 'pretrain' | 'rl' | 'eval';
export const SPLITS: readonly Split[] = ['pretrain', 'rl', 'eval'];

export interface Entity {
  name: string;
  gender: 'm' | 'f';
  attrs: Record<AttrKey, string>;
  /** Names of related people of the same world: sibling and friend are symmetric, mentor is a cycle. */
  rels: Record<RelKey, string>;
}

/** One stated fact: the subject's attribute or relation has this value (a word, a number or a name). */
export interface Fact {
  subject: string;
  key: FactKey;
  value: string;
}

export interface Question {
  question: string;
  answer: string;
  key: FactKey;
  /** forward: asks for the stated value; reverse: asks for the subject through a relation stated the other way. */
  direction: 'forward' | 'reverse';
}

export interface Passage {
  id: string;
  /** The person the passage is about. */
  subject: string;
  text: string;
  facts: Fact[];
  questions: Question[];
}

export interface World {
  split: Split;
  seed: number;
  entities: Entity[];
  byName: Map<string, Entity>;
  /** One passage per entity (the RL-training and evaluation contexts). */
  passages: Passage[];
}

export interface WorldOptions {
  /** Number of people (even; at most namesIn(split).length). */
  entities: number;
  /** Which part of the name space the world draws from (default 'eval'). */
  split?: Split;
}

// ---------------------------------------------------------------------------------------------
// Names

const cap = (s: string): string => s.charAt(0).toUpperCase() + s.slice(1);

/** The split a name belongs to: 60% pretrain, 20% rl, 20% eval, by a fixed hash of its syllables. */
export function splitOfName(i: number, j: number): Split {
  const h = rngU32(0x70e1d, i * SYLLABLES.length + j) % 10;
  return h < 6 ? 'pretrain' : h < 8 ? 'rl' : 'eval';
}

/** Every name of a split, in a fixed order. */
export function namesIn(split: Split): { name: string; syllables: [string, string] }[] {
  const out: { name: string; syllables: [string, string] }[] = [];
  SYLLABLES.forEach((a, i) => SYLLABLES.forEach((b, j) => {
    if (i !== j && splitOfName(i, j) === split) out.push({ name: cap(a) + b, syllables: [a, b] });
  }));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Phrasings. Placeholders: {X} the subject's name, {S} the subject as a sentence opener (name or
// He/She), {Sp} the subject's possessive as an opener (Name's or His/Her), {pos} his/her, {v} the
// value, {Y} the related person's name. Templates without {S}/{Sp} always name the subject.

export const FACT_TEMPLATES: Record<FactKey, readonly string[]> = {
  town: ['{S} lives in {v}.', '{S} has a house in {v}.', '{S} makes {pos} home in the town of {v}.', 'The town of {v} is home to {X}.', '{Sp} home town is {v}.'],
  job: ['{S} works as a {v}.', '{S} is a {v} by trade.', '{S} earns a living as a {v}.', 'By trade, {X} is a {v}.'],
  pet: ['{S} has a pet {v}.', '{S} keeps a {v} as a pet.', '{Sp} pet is a {v}.', 'A {v} lives with {X} as a pet.'],
  colour: ['{Sp} favourite colour is {v}.', '{S} likes the colour {v} best.', 'Of all colours, {X} loves {v} the most.'],
  food: ['{Sp} favourite food is {v}.', '{S} likes to eat {v} more than anything.', 'Nothing pleases {X} more than a meal of {v}.'],
  age: ['{S} is {v} years old.', '{Sp} age is {v}.', 'This year {X} turned {v}.'],
  sibling: ['{Sp} sibling is {Y}.', '{S} has a sibling named {Y}.', '{Y} is the sibling of {X}.', '{X} and {Y} are siblings.'],
  friend: ['{Sp} best friend is {Y}.', '{S} is best friends with {Y}.', '{Y} is the best friend of {X}.'],
  mentor: ['{Sp} mentor is {Y}.', '{S} was trained by {pos} mentor {Y}.', '{Y} is the mentor of {X}.', '{S} is a student of {Y}.'],
};

/** Statements of a relation fact told from the other person's side ({Y} is the subject now). */
export const REVERSE_TEMPLATES: Record<RelKey, readonly string[]> = {
  sibling: ["{Y}'s sibling is {X}.", '{Y} has a sibling named {X}.'],
  friend: ["{Y}'s best friend is {X}.", '{Y} is best friends with {X}.'],
  mentor: ["{Y}'s student is {X}.", '{Y} has a student named {X}.', '{Y} teaches {X}.'],
};

/** Sentences that join two attribute facts ({a} and {b} are the two values, in key order). */
export const COMBINED_TEMPLATES: readonly { keys: [AttrKey, AttrKey]; text: string }[] = [
  { keys: ['town', 'job'], text: '{X} is a {b} who lives in {a}.' },
  { keys: ['town', 'pet'], text: '{X} lives in {a} with a pet {b}.' },
  { keys: ['job', 'pet'], text: '{X} is a {a} who has a pet {b}.' },
  { keys: ['colour', 'food'], text: "{X} likes the colour {a} and {X}'s favourite food is {b}." },
  { keys: ['job', 'age'], text: '{X} is a {a} who is {b} years old.' },
  { keys: ['town', 'age'], text: '{X} is {b} years old and lives in {a}.' },
];

/** Single-fact implications of an attribute fact, phrased from the value's side. */
export const ATTR_IMPLICATION_TEMPLATES: Record<AttrKey, readonly string[]> = {
  town: ['{v} is the town where {X} lives.', 'Someone named {X} lives in {v}.'],
  job: ['The {v} {X} works at {pos} trade.', 'People who need a {v} can ask {X}.'],
  pet: ['The pet {v} belongs to {X}.', '{X} takes care of a {v}.'],
  colour: ['The colour {v} is the favourite of {X}.', '{X} would choose {v} over any other colour.'],
  food: ['A meal of {v} makes {X} happy.', '{X} would choose {v} over any other food.'],
  age: ['{X} was born {v} years ago.', '{X} is now {v}.'],
};

export const QUESTION_TEMPLATES: Record<FactKey, readonly string[]> = {
  town: ['Where does {X} live?', 'In which town does {X} live?', "What is {X}'s home town?"],
  job: ["What is {X}'s job?", 'What does {X} do for a living?', 'What work does {X} do?'],
  pet: ['What pet does {X} have?', 'What animal does {X} keep as a pet?'],
  colour: ["What is {X}'s favourite colour?", 'Which colour does {X} like best?'],
  food: ["What is {X}'s favourite food?", 'What does {X} like to eat most?'],
  age: ['How old is {X}?', "What is {X}'s age?"],
  sibling: ["Who is {X}'s sibling?", 'Who is the sibling of {X}?'],
  friend: ["Who is {X}'s best friend?", 'Who is the best friend of {X}?'],
  mentor: ["Who is {X}'s mentor?", 'Who trained {X}?'],
};

/** Questions whose answer is the subject ({X}), asked about the related person {Y}. */
export const REVERSE_QUESTION_TEMPLATES: Record<RelKey, readonly string[]> = {
  sibling: ["Who is {Y}'s sibling?", 'Who is the sibling of {Y}?'],
  friend: ["Who is {Y}'s best friend?", 'Who is the best friend of {Y}?'],
  mentor: ["Who is {Y}'s student?", 'Whom does {Y} teach?'],
};

export function isRel(key: FactKey): key is RelKey {
  return key === 'sibling' || key === 'friend' || key === 'mentor';
}

export function pick<T>(rng: Rng, xs: readonly T[]): T {
  if (xs.length === 0) throw new Error('pick: empty list');
  return xs[rng.below(xs.length)]!;
}

function fill(template: string, vars: Record<string, string>): string {
  return template.replace(/\{(\w+)\}/g, (whole, k: string) => {
    const v = vars[k];
    if (v === undefined) throw new Error(`toyworld: template "${template}" needs {${k}}`);
    return v;
  });
}

/** A statement of a fact. `pronoun`: open with He/She (only templates that allow it). */
export function renderFact(fact: Fact, gender: 'm' | 'f', rng: Rng, pronoun = false, template?: string): string {
  const t = template ?? pick(rng, FACT_TEMPLATES[fact.key]);
  const usesOpener = t.includes('{S}') || t.includes('{Sp}');
  const asPronoun = pronoun && usesOpener;
  return fill(t, {
    X: fact.subject,
    S: asPronoun ? (gender === 'm' ? 'He' : 'She') : fact.subject,
    Sp: asPronoun ? (gender === 'm' ? 'His' : 'Her') : `${fact.subject}'s`,
    pos: gender === 'm' ? 'his' : 'her',
    v: fact.value,
    Y: fact.value,
  });
}

/** A relation fact stated with the related person as subject. */
export function renderReverse(fact: Fact, rng: Rng): string {
  if (!isRel(fact.key)) throw new Error(`renderReverse: ${fact.key} is not a relation`);
  return fill(pick(rng, REVERSE_TEMPLATES[fact.key]), { X: fact.subject, Y: fact.value });
}

export function renderAttrImplication(fact: Fact, gender: 'm' | 'f', rng: Rng): string {
  if (isRel(fact.key)) throw new Error(`renderAttrImplication: ${fact.key} is a relation`);
  return fill(pick(rng, ATTR_IMPLICATION_TEMPLATES[fact.key]), { X: fact.subject, v: fact.value, pos: gender === 'm' ? 'his' : 'her' });
}

export function renderCombined(subject: string, values: [string, string], text: string): string {
  return fill(text, { X: subject, a: values[0], b: values[1] });
}

export function forwardQuestion(fact: Fact, rng: Rng): Question {
  return { question: fill(pick(rng, QUESTION_TEMPLATES[fact.key]), { X: fact.subject }), answer: fact.value, key: fact.key, direction: 'forward' };
}

export function reverseQuestion(fact: Fact, rng: Rng): Question {
  if (!isRel(fact.key)) throw new Error(`reverseQuestion: ${fact.key} is not a relation`);
  return { question: fill(pick(rng, REVERSE_QUESTION_TEMPLATES[fact.key]), { Y: fact.value }), answer: fact.subject, key: fact.key, direction: 'reverse' };
}

/** Every fact of an entity. */
export function factsOf(e: Entity): Fact[] {
  return [
    ...ATTR_KEYS.map((key) => ({ subject: e.name, key, value: e.attrs[key] })),
    ...REL_KEYS.map((key) => ({ subject: e.name, key, value: e.rels[key] })),
  ];
}

/** 4–6 facts of an entity: 3–4 attributes and 1–2 relations, in a random order. */
export function chooseFacts(e: Entity, rng: Rng): Fact[] {
  const nAttr = 3 + rng.below(2);
  const nRel = 1 + rng.below(2);
  const attrs = rng.shuffle([...ATTR_KEYS]).slice(0, nAttr);
  const rels = rng.shuffle([...REL_KEYS]).slice(0, nRel);
  const keys: FactKey[] = rng.shuffle([...attrs, ...rels]);
  return keys.map((key) => ({ subject: e.name, key, value: isRel(key) ? e.rels[key] : e.attrs[key] }));
}

/** The passage text for a list of facts: the first sentence names the subject, later ones may use he/she. */
export function renderPassageText(e: Entity, facts: Fact[], rng: Rng): string {
  return facts.map((f, i) => renderFact(f, e.gender, rng, i > 0 && rng.uniform() < 0.5)).join(' ');
}

/** One question per fact, plus a reverse question per relation fact. */
export function questionsFor(facts: Fact[], rng: Rng): Question[] {
  const qs = facts.map((f) => forwardQuestion(f, rng));
  for (const f of facts) if (isRel(f.key)) qs.push(reverseQuestion(f, rng));
  return qs;
}

export function makePassage(e: Entity, rng: Rng, id: string): Passage {
  const facts = chooseFacts(e, rng);
  return { id, subject: e.name, text: renderPassageText(e, facts, rng), facts, questions: questionsFor(facts, rng) };
}

// ---------------------------------------------------------------------------------------------
// Worlds

/** Pairs up a shuffled list: (a0,a1), (a2,a3), … */
function pairs(order: number[]): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 0; i + 1 < order.length; i += 2) out.push([order[i]!, order[i + 1]!]);
  return out;
}

export function makeWorld(seed: number, options: WorldOptions): World {
  const split = options.split ?? 'eval';
  const n = options.entities;
  const pool = namesIn(split);
  if (!Number.isInteger(n) || n < 4 || n % 2 !== 0) throw new Error(`makeWorld: entities must be an even integer >= 4, got ${n}`);
  if (n > pool.length) throw new Error(`makeWorld: the ${split} split has ${pool.length} names, asked for ${n} entities`);
  const rng = new Rng(rngU32(seed, SPLITS.indexOf(split) + 1));
  const names = rng.shuffle(pool.map((p) => p.name)).slice(0, n);
  const entities: Entity[] = names.map((name) => ({
    name,
    gender: rng.uniform() < 0.5 ? 'm' : 'f',
    attrs: {
      town: pick(rng, TOWNS), job: pick(rng, JOBS), pet: pick(rng, PETS),
      colour: pick(rng, COLOURS), food: pick(rng, FOODS), age: pick(rng, AGES),
    },
    rels: { sibling: '', friend: '', mentor: '' },
  }));
  // Siblings and best friends: two perfect matchings that share no pair; mentors: one cycle.
  const idx = entities.map((_, i) => i);
  const sib = pairs(rng.shuffle([...idx]));
  const sibKey = new Set(sib.map(([a, b]) => `${Math.min(a, b)}-${Math.max(a, b)}`));
  let fr: [number, number][] = [];
  for (let attempt = 0; ; attempt++) {
    fr = pairs(rng.shuffle([...idx]));
    if (!fr.some(([a, b]) => sibKey.has(`${Math.min(a, b)}-${Math.max(a, b)}`))) break;
    if (attempt > 1000) throw new Error('makeWorld: could not draw friendships disjoint from siblings');
  }
  for (const [a, b] of sib) { entities[a]!.rels.sibling = names[b]!; entities[b]!.rels.sibling = names[a]!; }
  for (const [a, b] of fr) { entities[a]!.rels.friend = names[b]!; entities[b]!.rels.friend = names[a]!; }
  const cycle = rng.shuffle([...idx]);
  cycle.forEach((a, k) => { entities[a]!.rels.mentor = names[cycle[(k + 1) % n]!]!; });
  const byName = new Map(entities.map((e) => [e.name, e]));
  const passages = entities.map((e, i) => makePassage(e, rng, `${split}-${seed}-${i}`));
  return { split, seed, entities, byName, passages };
}

/** The worlds the demo uses: fixed seeds and sizes, one per split. */
export const WORLD_PRESETS: Record<Split, { seed: number; entities: number }> = {
  pretrain: { seed: 1, entities: 600 },
  rl: { seed: 2, entities: 200 },
  eval: { seed: 3, entities: 200 },
};

export function presetWorld(split: Split): World {
  const p = WORLD_PRESETS[split];
  return makeWorld(p.seed, { entities: p.entities, split });
}
