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
// The passages of icqa and self-edit documents are about a fresh random person each time (a
// pretraining-split name outside the core, with random attributes and relations), so nothing in
// them can be answered from memory: the model has to read. (With the fixed world's people there,
// a small model learns to recite memorised and typical values instead of reading.)
// Documents are generated on the fly: the batch of step s is a function of (seed, s) alone, so a
// resumed run sees exactly the data an uninterrupted one would.
import type { Sequence } from '../../model/model.js';
import type { TextTokenizer } from '../../model/tokenizer.js';
import { rngU32, Rng } from '../../util/rng.js';
import { STYLES, noteLine, passageBlock, qaLine, selfEditPromptText, writeSelfEdit, type Style } from './styles.js';
import {
  ATTR_VALUES, COMBINED_TEMPLATES, chooseFacts, namesIn, factsOf, forwardQuestion, isRel, pick, renderAttrImplication, renderCombined, renderFact,
  renderPassageText, renderReverse, reverseQuestion, questionsFor, type Entity, type Fact, type World,
} from './world.js';

export const DOC_KINDS = ['bio', 'note', 'cbqa', 'icqa', 'self-edit'] as const;
export type DocKind = (typeof DOC_KINDS)[number];

export interface CorpusOptions {
  seed: number;
  /** People whose facts are memorised (bio, note and cbqa documents are about them). */
  coreEntities: number;
  /** Share of training tokens per document kind (normalised). */
  shares: Record<DocKind, number>;
  /** Documents longer than this many tokens are dropped (and redrawn). */
  maxTokens: number;
}

export const DEFAULT_CORPUS: Omit<CorpusOptions, 'seed'> = {
  coreEntities: 240,
  shares: { bio: 0.15, note: 0.15, cbqa: 0.2, icqa: 0.15, 'self-edit': 0.35 },
  maxTokens: 256,
};

export interface Document {
  kind: DocKind;
  text: string;
  /** The self-edit style (self-edit documents). */
  style?: Style;
}

export class PretrainCorpus {
  readonly world: World;
  readonly options: CorpusOptions;
  readonly core: Entity[];
  /** Names of the fresh people of in-context documents: pretraining-split names outside the core. */
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
    this.freshNames = namesIn('pretrain').map((n) => n.name).filter((n) => !core.has(n));
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
    switch (kind) {
      case 'bio': {
        const e = pick(rng, this.core);
        return { kind, text: passageBlock(renderPassageText(e, chooseFacts(e, rng), rng)) };
      }
      case 'note': {
        const e = pick(rng, this.core);
        return { kind, text: this.note(e, rng) };
      }
      case 'cbqa': {
        const lines: string[] = [];
        const n = 3 + rng.below(4);
        for (let i = 0; i < n; i++) {
          const f = pick(rng, factsOf(pick(rng, this.core)));
          const q = isRel(f.key) && rng.uniform() < 0.4 ? reverseQuestion(f, rng) : forwardQuestion(f, rng);
          lines.push(qaLine(q.question, q.answer));
        }
        return { kind, text: lines.join('\n') };
      }
      case 'icqa': {
        const e = this.freshEntity(rng);
        const facts = chooseFacts(e, rng);
        const qs = rng.shuffle(questionsFor(facts, rng));
        const n = Math.min(qs.length, 2 + rng.below(4));
        return { kind, text: `${passageBlock(renderPassageText(e, facts, rng))}\n${qs.slice(0, n).map((q) => qaLine(q.question, q.answer)).join('\n')}` };
      }
      case 'self-edit': {
        const e = this.freshEntity(rng);
        const facts = chooseFacts(e, rng);
        const text = renderPassageText(e, facts, rng);
        const style = pick(rng, STYLES);
        const passage = { id: '', subject: e.name, text, facts, questions: [] };
        return { kind, style, text: selfEditPromptText(text) + writeSelfEdit(style, { passage, gender: e.gender, names: this.freshNames }, rng) };
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
   * The documents of training step `step` (1-based), tokenized (BOS … EOS), about `tokens` tokens in
   * all, with kinds chosen so every batch follows the token shares.
   */
  batch(step: number, tokens: number, tok: TextTokenizer): { sequences: Sequence[]; docs: Document[] } {
    const rng = new Rng(rngU32(this.options.seed, step));
    const eos = tok.eosTokenIds[0];
    if (eos === undefined) throw new Error('PretrainCorpus: the tokenizer has no EOS token');
    const shares = DOC_KINDS.map((k) => this.options.shares[k]);
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
      const ids = [...tok.encode(doc.text), eos];
      if (ids.length > this.options.maxTokens) continue;
      sequences.push({ tokens: ids });
      docs.push(doc);
      produced[best] = (produced[best] ?? 0) + ids.length;
      total += ids.length;
    }
    return { sequences, docs };
  }
}
