// Text formats of the toy world (one place, shared by the corpus, the domain and the tokenizer's
// vocabulary), the self-edit styles the pretraining corpus shows (all with the same frequency: the
// corpus does not prefer any), an oracle that writes a self-edit of a given style for a passage,
// and a classifier that names the style of any self-edit text (to report what a policy samples).
import type { Rng } from '../../util/rng.js';
import {
  ATTR_VALUES, COMBINED_TEMPLATES, FACT_TEMPLATES, REVERSE_TEMPLATES, ATTR_IMPLICATION_TEMPLATES, QUESTION_TEMPLATES,
  REVERSE_QUESTION_TEMPLATES, forwardQuestion, isRel, pick, renderAttrImplication, renderCombined, renderFact, renderReverse,
  reverseQuestion, type AttrKey, type Fact, type FactKey, type Passage,
} from './world.js';

// ---- formats -----------------------------------------------------------------------------------

/** A passage as documents and prompts show it. */
export const passageBlock = (text: string): string => `Passage: ${text}`;
/** What the policy continues with a self-edit (the neutral "notes" prompt: it names no style). */
export const selfEditPromptText = (text: string): string => `Passage: ${text}\nNotes:\n`;
/** A question-answer line. */
export const qaLine = (question: string, answer: string): string => `Q: ${question} A: ${answer}`;
/** A closed-book question prompt; the answer follows after a space and ends at a newline or EOS. */
export const questionPrompt = (question: string): string => `Q: ${question} A:`;
/** A note line. */
export const noteLine = (sentence: string): string => `- ${sentence}`;

/** The empty-ish notes ({X} = the subject). */
export const EMPTY_NOTES: readonly string[] = ['- {X}.', '- This passage is about {X}.', '- Nothing to note.', '- A passage about {X}.'];

// ---- styles ------------------------------------------------------------------------------------

export const STYLES = ['restate', 'qa', 'implications', 'copy', 'partial', 'noisy', 'empty'] as const;
export type Style = (typeof STYLES)[number];

export const STYLE_DESCRIPTIONS: Record<Style, string> = {
  restate: 'every fact restated as a named sentence, one per line',
  qa: 'a question-answer line per fact (sometimes the reverse question of a relation)',
  implications: 'relations told from the other side, attributes joined or told from the value\'s side',
  copy: 'the passage copied verbatim',
  partial: 'one or two of the facts restated',
  noisy: 'every fact restated, about half of them with a wrong value',
  empty: 'a content-free line',
};

export interface StyleContext {
  passage: Passage;
  gender: 'm' | 'f';
  /** Names to draw wrong relation values from (the world's people). */
  names: readonly string[];
}

function wrongValue(f: Fact, names: readonly string[], rng: Rng): string {
  const pool = isRel(f.key) ? names : ATTR_VALUES[f.key as AttrKey];
  for (let i = 0; i < 100; i++) {
    const v = pick(rng, pool);
    if (v !== f.value && v !== f.subject) return v;
  }
  throw new Error('wrongValue: no alternative value');
}

/** The oracle: a self-edit of `style` for the passage (lines joined by newlines). */
export function writeSelfEdit(style: Style, c: StyleContext, rng: Rng): string {
  const { passage, gender } = c;
  const facts = rng.shuffle([...passage.facts]);
  const subject = passage.subject;
  const restate = (f: Fact): string => noteLine(renderFact(f, gender, rng, false));
  let lines: string[];
  switch (style) {
    case 'restate':
      lines = facts.map(restate);
      break;
    case 'qa':
      lines = [];
      for (const f of facts) {
        const q = forwardQuestion(f, rng);
        lines.push(qaLine(q.question, q.answer));
        if (isRel(f.key) && rng.uniform() < 0.5) {
          const r = reverseQuestion(f, rng);
          lines.push(qaLine(r.question, r.answer));
        }
      }
      break;
    case 'implications': {
      lines = [];
      const attrs = facts.filter((f) => !isRel(f.key));
      const used = new Set<Fact>();
      // Join pairs of attributes where a combined sentence exists.
      for (const t of rng.shuffle([...COMBINED_TEMPLATES])) {
        const a = attrs.find((f) => f.key === t.keys[0] && !used.has(f));
        const b = attrs.find((f) => f.key === t.keys[1] && !used.has(f));
        if (a && b && rng.uniform() < 0.7) {
          used.add(a); used.add(b);
          lines.push(noteLine(renderCombined(subject, [a.value, b.value], t.text)));
        }
      }
      for (const f of facts) {
        if (isRel(f.key)) lines.push(noteLine(renderReverse(f, rng)));
        else if (!used.has(f)) lines.push(noteLine(renderAttrImplication(f, gender, rng)));
      }
      lines = rng.shuffle(lines);
      break;
    }
    case 'copy':
      lines = [noteLine(passage.text)];
      break;
    case 'partial':
      lines = facts.slice(0, 1 + rng.below(2)).map(restate);
      break;
    case 'noisy': {
      const wrong = facts.map(() => rng.uniform() < 0.5);
      if (!wrong.some(Boolean)) wrong[rng.below(wrong.length)] = true;
      lines = facts.map((f, i) => restate(wrong[i] ? { ...f, value: wrongValue(f, c.names, rng) } : f));
      break;
    }
    case 'empty':
      lines = [pick(rng, EMPTY_NOTES).replace('{X}', subject)];
      break;
  }
  return lines.join('\n');
}

// ---- classifier --------------------------------------------------------------------------------

export type StyleLabel = Style | 'mixed' | 'other';

interface Pattern {
  re: RegExp;
  kind: 'fact' | 'reverse' | 'combined' | 'attr-implication';
  key?: FactKey;
  keys?: [AttrKey, AttrKey];
}

const NAME = "[A-Z][a-z]+";
const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function compile(template: string): RegExp {
  let src = '';
  let last = 0;
  for (const m of template.matchAll(/\{(\w+)\}/g)) {
    src += escapeRe(template.slice(last, m.index));
    const k = m[1]!;
    if (k === 'X') src += `(?<X>${NAME})`;
    else if (k === 'Y') src += `(?<Y>${NAME})`;
    else if (k === 'S') src += `(?<S>${NAME}|He|She)`;
    else if (k === 'Sp') src += `(?:(?<Sp>${NAME})'s|His|Her)`;
    else if (k === 'pos') src += '(?:his|her)';
    else if (k === 'v') src += '(?<v>[A-Za-z0-9]+)';
    else if (k === 'a') src += '(?<a>[A-Za-z0-9]+)';
    else if (k === 'b') src += '(?<b>[A-Za-z0-9]+)';
    else throw new Error(`compile: unknown placeholder {${k}}`);
    last = (m.index ?? 0) + m[0].length;
  }
  src += escapeRe(template.slice(last));
  // A name may be used twice in one template ({X} … {X}): later uses become back-references.
  const seen = new Set<string>();
  src = src.replace(/\(\?<(\w+)>[^)]*\)/g, (whole, g: string) => {
    if (seen.has(g)) return `\\k<${g}>`;
    seen.add(g);
    return whole;
  });
  return new RegExp(`^${src}$`);
}

let patterns: Pattern[] | undefined;
function allPatterns(): Pattern[] {
  if (patterns) return patterns;
  const out: Pattern[] = [];
  for (const [key, ts] of Object.entries(FACT_TEMPLATES) as [FactKey, readonly string[]][]) for (const t of ts) out.push({ re: compile(t), kind: 'fact', key });
  for (const [key, ts] of Object.entries(REVERSE_TEMPLATES) as [FactKey, readonly string[]][]) for (const t of ts) out.push({ re: compile(t), kind: 'reverse', key });
  for (const [key, ts] of Object.entries(ATTR_IMPLICATION_TEMPLATES) as [FactKey, readonly string[]][]) for (const t of ts) out.push({ re: compile(t), kind: 'attr-implication', key });
  for (const t of COMBINED_TEMPLATES) out.push({ re: compile(t.text), kind: 'combined', keys: t.keys });
  patterns = out;
  return out;
}

export interface ParsedStatement {
  kind: Pattern['kind'];
  facts: Fact[];
}

/** Parses one sentence into the facts it states (a pronoun subject stands for `subject`). */
export function parseStatement(sentence: string, subject: string): ParsedStatement | null {
  for (const p of allPatterns()) {
    const m = p.re.exec(sentence);
    if (!m) continue;
    const g = m.groups ?? {};
    const subj = g.X ?? (g.S && g.S !== 'He' && g.S !== 'She' ? g.S : undefined) ?? g.Sp ?? subject;
    if (p.kind === 'combined') {
      const [ka, kb] = p.keys!;
      return { kind: p.kind, facts: [{ subject: subj, key: ka, value: g.a! }, { subject: subj, key: kb, value: g.b! }] };
    }
    if (p.kind === 'reverse') return { kind: p.kind, facts: [{ subject: g.X!, key: p.key!, value: g.Y! }] };
    const value = g.v ?? g.Y;
    if (value === undefined) continue;
    return { kind: p.kind, facts: [{ subject: subj, key: p.key!, value }] };
  }
  return null;
}

const QA_RE = /^Q: (.+\?) A: (.+)$/;

/** Which facts a question asks for: parses "Q: … A: …" against the question templates. */
function parseQa(question: string): { key: FactKey; about: string; reverse: boolean } | null {
  for (const [key, ts] of Object.entries(QUESTION_TEMPLATES) as [FactKey, readonly string[]][]) {
    for (const t of ts) {
      const m = compile(t).exec(question);
      if (m) return { key, about: m.groups?.X ?? '', reverse: false };
    }
  }
  for (const [key, ts] of Object.entries(REVERSE_QUESTION_TEMPLATES) as [FactKey, readonly string[]][]) {
    for (const t of ts) {
      const m = compile(t).exec(question);
      if (m) return { key, about: m.groups?.Y ?? '', reverse: true };
    }
  }
  return null;
}

export interface StyleAnalysis {
  style: StyleLabel;
  lines: number;
  /** Passage facts the self-edit states correctly (any direction or form). */
  covered: number;
  /** Statements (notes or question-answer pairs) that contradict the passage or are not about it. */
  wrong: number;
  /** Statements that agree with the passage. */
  right: number;
  /** Lines that parse as nothing known. */
  unparsed: number;
}

/** Names the style of a self-edit written for `passage` (see STYLES; 'mixed' and 'other' besides). */
export function classifySelfEdit(text: string, passage: Passage): StyleAnalysis {
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
  const subject = passage.subject;
  const truth = new Map<string, string>();
  for (const f of passage.facts) truth.set(`${f.subject}|${f.key}`, f.value);
  const covered = new Set<string>();
  let wrong = 0;
  let right = 0;
  let unparsed = 0;
  let qa = 0;
  let implied = 0;
  let copied = 0;
  let notes = 0;
  let empty = 0;
  const check = (f: Fact): void => {
    if (truth.get(`${f.subject}|${f.key}`) === f.value) { covered.add(`${f.subject}|${f.key}`); right++; }
    // Siblings and best friends are symmetric: "Y's sibling is X" states the passage's "X's sibling is Y".
    else if ((f.key === 'sibling' || f.key === 'friend') && truth.get(`${f.value}|${f.key}`) === f.subject) { covered.add(`${f.value}|${f.key}`); right++; }
    else wrong++;
  };
  for (const line of lines) {
    const qm = QA_RE.exec(line);
    if (qm) {
      qa++;
      const parsed = parseQa(qm[1]!);
      if (!parsed) { unparsed++; continue; }
      if (parsed.reverse) check({ subject: qm[2]!.trim(), key: parsed.key, value: parsed.about });
      else check({ subject: parsed.about, key: parsed.key, value: qm[2]!.trim() });
      continue;
    }
    if (!line.startsWith('- ')) { unparsed++; continue; }
    const body = line.slice(2);
    if (body === passage.text) { copied++; for (const f of passage.facts) { covered.add(`${f.subject}|${f.key}`); right++; } continue; }
    // Several sentences on one line: a (possibly imperfect) copy of the passage.
    const sentences = body.split(/(?<=\.) /);
    if (sentences.length >= 2) {
      copied++;
      for (const sentence of sentences) {
        const st = parseStatement(sentence, subject);
        if (st) for (const f of st.facts) check(f);
      }
      continue;
    }
    if (EMPTY_NOTES.some((t) => t.slice(2).replace('{X}', subject) === body)) { empty++; continue; }
    const st = parseStatement(body, subject);
    if (!st) { unparsed++; continue; }
    notes++;
    if (st.kind !== 'fact') implied++;
    for (const f of st.facts) check(f);
  }
  const n = lines.length;
  // By form first (what kind of notes were written), then plain notes by content.
  let style: StyleLabel;
  if (n === 0 || (empty > 0 && empty === n)) style = 'empty';
  else if (copied > 0 && copied + unparsed + empty === n) style = 'copy';
  else if (unparsed * 2 > n) style = 'other';
  else if (qa * 3 >= 2 * n) style = 'qa';
  else if (qa * 3 >= n) style = 'mixed';
  else if (implied * 2 >= Math.max(1, notes)) style = 'implications';
  else if (wrong > 0) style = 'noisy';
  else if (covered.size >= passage.facts.length) style = 'restate';
  else if (covered.size > 0) style = 'partial';
  else style = 'other';
  return { style, lines: n, covered: covered.size, wrong, right, unparsed };
}
