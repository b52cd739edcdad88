// The pretraining corpus: documents about the pretraining world only (its names never occur in the
// RL or evaluation worlds), mixed so that the model learns
//   (a) to answer questions about a passage in its context            — "icqa" documents,
//   (b) to answer closed-book about facts it was trained on            — "bio", "note" and "cbqa":
//       the facts of the "core" people appear as passages and as standalone note lines (the shape
//       of inner-loop training data) and, in other documents, as closed-book question-answer
//       lines, so the model learns that what it was trained on can be retrieved by a question;
//       this is what makes fine-tuning on a self-edit useful at all,
//   (c) to write notes about a passage in every style of styles.ts      — "self-edit" documents,
//       each style with the same frequency and nothing saying which is useful.
// The passages of icqa and self-edit documents are about a fresh random person each time (random
// attributes and relations), so nothing in them can be answered from memory: the model has to read.
// (With the fixed world's people there, a small model learns to recite memorised and typical values
// instead of reading.) Their names are drawn from every two-syllable name, the RL and evaluation
// worlds' names included, but only ever with random facts: names are vocabulary, facts are what is
// evaluated, and no RL or evaluation fact is in the corpus (the memorised documents, bio/note/cbqa,
// are about the pretraining world alone). Measured: with fresh names from the pretraining split
// only, every held-out name is a syllable pair the model never saw, and it copies such names badly
// (it writes a familiar pretraining name instead: see models/toyworld/README.md).
// Documents are generated on the fly: the batch of step s is a function of (seed, s) alone, so a
// resumed run sees exactly the data an uninterrupted one would.
import type { Sequence } from '../../model/model.js';
import type { TextTokenizer } from '../../model/tokenizer.js';
import { rngU32, Rng } from '../../util/rng.js';
import { STYLES, noteLine, passageBlock, qaLine, selfEditPromptText, writeSelfEdit, type Style } from './styles.js';
import {
  ATTR_VALUES, COMBINED_TEMPLATES, chooseFacts, namesIn, factsOf, forwardQuestion, isRel, pick, renderAttrImplication, renderCombined, renderFact,
  renderPassageText, renderReverse, reverseQuestion, questionsFor, SPLITS, type Entity, type Fact, type World,
} from './world.js';

export const DOC_KINDS = ['bio', 'note', 'cbqa', 'icqa', 'self-edit'] as const;
export type DocKind = (typeof DOC_KINDS)[number];

export interface CorpusOptions {
  seed: number;
  /** People whose facts are memorised (bio, note and cbqa documents are about them). */
  coreEntities: number;
  /** Share of training tokens per document kind (normalised). */
  shares: Record<DocKind, number>;
  /**
   * Shares of the first steps (a curriculum): in-context reading is learnt late when it competes
   * with memorisation from the start (measured: see models/toyworld/README.md), so the first steps
   * weigh in-context documents more.
   */
  warmStart?: { steps: number; shares: Record<DocKind, number> };
  /** Documents longer than this many tokens are dropped (and redrawn). */
  maxTokens: number;
  /**
   * Names of the fresh people of in-context documents: 'pretrain' — pretraining-split names outside
   * the core; 'any' — every two-syllable name except the core's (facts stay random either way).
   */
  freshNames: 'pretrain' | 'any';
  /** Questions asked per icqa passage: a few (2–5) or all of them. */
  icqaQuestions: 'some' | 'all';
  /**
   * Loss weight of the passage of icqa and self-edit documents (0: none; it is random, the answers
   * and notes are not), of the answers of icqa and cbqa documents, of the notes of self-edit
   * documents, and of everything else (1).
   * Answers are a small fraction of the tokens; without a larger weight a small model is slow to
   * learn to look them up in its context (measured: see models/toyworld/README.md).
   */
  weights: { context: number; answer: number; notes: number };
}

export const DEFAULT_CORPUS: Omit<CorpusOptions, 'seed'> = {
  coreEntities: 240,
  shares: { bio: 0.12, note: 0.08, cbqa: 0.12, icqa: 0.23, 'self-edit': 0.45 },
  warmStart: { steps: 500, shares: { bio: 0.04, note: 0.03, cbqa: 0.03, icqa: 0.6, 'self-edit': 0.3 } },
  maxTokens: 256,
  freshNames: 'any',
  icqaQuestions: 'all',
  weights: { context: 0, answer: 8, notes: 2 },
};

/** A piece of a document and the loss weight of its tokens. Pieces end where the pre-tokenizer cuts. */
export interface Segment {
  text: string;
  role: 'context' | 'answer' | 'notes' | 'text';
}

export interface Document {
  kind: DocKind;
  text: string;
  segments: Segment[];
  /** The self-edit style (self-edit documents). */
  style?: Style;
}

export class PretrainCorpus {
  readonly world: World;
  readonly options: CorpusOptions;
  readonly core: Entity[];
  /** Names of the fresh people of in-context documents (CorpusOptions.freshNames). */
  private readonly freshNames: string[];

  constructor(world: World, options: CorpusOptions) {
    if (world.split !== 'pretrain') throw new Error(`PretrainCorpus: the corpus is built from the pretrain world, got the ${world.split} world`);
    if (options.coreEntities < 2 || options.coreEntities > world.entities.length) {
      throw new Error(`PretrainCorpus: coreEntities must be in [2, ${world.entities.length}], got ${options.coreEntities}`);
    }
    this.world = world;
    this.options = options;
    this.core = world.entities.slice(0, options.coreEntities);
    const core = new Set(this.core.map((e) => e.name));
    const pool = options.freshNames === 'any' ? SPLITS.flatMap((split) => namesIn(split)) : namesIn('pretrain');
    this.freshNames = pool.map((n) => n.name).filter((n) => !core.has(n));
  }

  /** A person made up for one document: random attributes, random (distinct) related people. */
  freshEntity(rng: Rng): Entity {
    const chosen: string[] = [];
    while (chosen.length < 4) {
      const n = pick(rng, this.freshNames);
      if (!chosen.includes(n)) chosen.push(n);
    }
    const [name, sibling, friend, mentor] = chosen as [string, string, string, string];
    return {
      name,
      gender: rng.uniform() < 0.5 ? 'm' : 'f',
      attrs: {
        town: pick(rng, ATTR_VALUES.town), job: pick(rng, ATTR_VALUES.job), pet: pick(rng, ATTR_VALUES.pet),
        colour: pick(rng, ATTR_VALUES.colour), food: pick(rng, ATTR_VALUES.food), age: pick(rng, ATTR_VALUES.age),
      },
      rels: { sibling, friend, mentor },
    };
  }

  /** One document of a kind. */
  document(kind: DocKind, rng: Rng): Document {
    const doc = (segments: Segment[], style?: Style): Document => ({ kind, text: segments.map((x) => x.text).join(''), segments, ...(style ? { style } : {}) });
    // "Q: … A:" then " answer", lines joined by newlines.
    const qaSegments = (qs: { question: string; answer: string }[]): Segment[] => qs.flatMap((q, i) => {
      const line = qaLine(q.question, q.answer);
      const cut = line.length - q.answer.length - 1;
      return [{ text: (i > 0 ? '\n' : '') + line.slice(0, cut), role: 'text' as const }, { text: line.slice(cut), role: 'answer' as const }];
    });
    switch (kind) {
      case 'bio': {
        const e = pick(rng, this.core);
        return doc([{ text: passageBlock(renderPassageText(e, chooseFacts(e, rng), rng)), role: 'text' }]);
      }
      case 'note': {
        const e = pick(rng, this.core);
        return doc([{ text: this.note(e, rng), role: 'text' }]);
      }
      case 'cbqa': {
        const qs = [];
        const n = 3 + rng.below(4);
        for (let i = 0; i < n; i++) {
          const f = pick(rng, factsOf(pick(rng, this.core)));
          qs.push(isRel(f.key) && rng.uniform() < 0.4 ? reverseQuestion(f, rng) : forwardQuestion(f, rng));
        }
        return doc(qaSegments(qs));
      }
      case 'icqa': {
        const e = this.freshEntity(rng);
        const facts = chooseFacts(e, rng);
        const qs = rng.shuffle(questionsFor(facts, rng));
        const n = this.options.icqaQuestions === 'all' ? qs.length : Math.min(qs.length, 2 + rng.below(4));
        return doc([{ text: `${passageBlock(renderPassageText(e, facts, rng))}\n`, role: 'context' }, ...qaSegments(qs.slice(0, n))]);
      }
      case 'self-edit': {
        const e = this.freshEntity(rng);
        const facts = chooseFacts(e, rng);
        const text = renderPassageText(e, facts, rng);
        const style = pick(rng, STYLES);
        const passage = { id: '', subject: e.name, text, facts, questions: [] };
        const notes = writeSelfEdit(style, { passage, gender: e.gender, names: this.freshNames }, rng);
        return doc([{ text: selfEditPromptText(text), role: 'context' }, { text: notes, role: 'notes' }], style);
      }
    }
  }

  /** A standalone note line about one fact of `e`: restated, told from the other side, or joined. */
  private note(e: Entity, rng: Rng): string {
    const facts = factsOf(e);
    const f: Fact = pick(rng, facts);
    const r = rng.uniform();
    if (isRel(f.key) && r < 0.35) return noteLine(renderReverse(f, rng));
    if (!isRel(f.key) && r < 0.2) return noteLine(renderAttrImplication(f, e.gender, rng));
    if (r > 0.85) {
      const t = pick(rng, COMBINED_TEMPLATES);
      return noteLine(renderCombined(e.name, [e.attrs[t.keys[0]], e.attrs[t.keys[1]]], t.text));
    }
    return noteLine(renderFact(f, e.gender, rng, false));
  }

  /**
   * A document as BOS, its segments' tokens, EOS, with each token's loss weight (the labels
   * convention of Sequence.trainMask: the weight of predicting that token). Segments are encoded one
   * by one; they end where the pre-tokenizer cuts anyway (before a newline or a space-led word), so
   * the ids equal those of the whole text (test/toyworld.test.ts checks it).
   */
  tokenize(doc: Document, tok: TextTokenizer): { tokens: number[]; weights: number[] } {
    const eos = tok.eosTokenIds[0];
    const bos = tok.bosTokenId;
    if (eos === undefined || bos === undefined) throw new Error('PretrainCorpus: the tokenizer needs BOS and EOS tokens');
    const w = this.options.weights;
    const tokens = [bos];
    const weights = [0];
    for (const seg of doc.segments) {
      const weight = seg.role === 'context' ? w.context : seg.role === 'answer' ? w.answer : seg.role === 'notes' ? w.notes : 1;
      for (const id of tok.encode(seg.text, { addSpecialTokens: false })) { tokens.push(id); weights.push(weight); }
    }
    tokens.push(eos);
    weights.push(1);
    return { tokens, weights };
  }

  /**
   * The documents of training step `step` (1-based), tokenized (BOS … EOS), about `tokens` tokens in
   * all, with kinds chosen so every batch follows the token shares.
   */
  batch(step: number, tokens: number, tok: TextTokenizer): { sequences: Sequence[]; docs: Document[] } {
    const rng = new Rng(rngU32(this.options.seed, step));
    const ws = this.options.warmStart;
    const table = ws && step <= ws.steps ? ws.shares : this.options.shares;
    const shares = DOC_KINDS.map((k) => table[k]);
    const sum = shares.reduce((a, b) => a + b, 0);
    const produced = DOC_KINDS.map(() => 0);
    const sequences: Sequence[] = [];
    const docs: Document[] = [];
    let total = 0;
    while (total < tokens) {
      // The kind furthest below its share of the tokens so far (ties: the first).
      let best = 0;
      let bestDeficit = -Infinity;
      DOC_KINDS.forEach((_, k) => {
        const deficit = ((shares[k] ?? 0) / sum) * (total + 1) - (produced[k] ?? 0);
        if ((shares[k] ?? 0) > 0 && deficit > bestDeficit) { best = k; bestDeficit = deficit; }
      });
      const doc = this.document(DOC_KINDS[best]!, rng);
      const { tokens: ids, weights } = this.tokenize(doc, tok);
      if (ids.length > this.options.maxTokens) continue;
      sequences.push({ tokens: ids, trainMask: weights });
      docs.push(doc);
      produced[best] = (produced[best] ?? 0) + ids.length;
      total += ids.length;
    }
    return { sequences, docs };
  }
}
