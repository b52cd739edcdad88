// What the policy writes, per condition of a toy-world run: the share of each self-edit style
// (styles.ts classifier), how many of the statements in the self-edits are true to the passage,
// and the accuracy reached with each style. Read from the ledger alone, so `seal demo` and
// `seal report` show the same thing for a finished or resumed run. This is how a reader sees what
// ReST-EM discovered: nothing in the prompt or the corpus says which style helps.
import type { InnerEntry, LedgerEntry } from '../../seal/ledger.js';
import { describeSelfEdit, type ToyContext } from './domain.js';
import type { StyleLabel } from './styles.js';

export interface StyleShare {
  style: StyleLabel;
  /** Fraction of the condition's self-edits. */
  share: number;
  /** Question accuracy after training on self-edits of this style. */
  accuracy: number;
}

export interface ConditionStyles {
  condition: string;
  selfEdits: number;
  styles: StyleShare[];
  /** Statements (notes or question-answer pairs) that agree with the passage, over all statements. */
  statementsTrue: number;
}

/** Style mix of every evaluation condition that has self-edits, in ledger order. */
export function styleReport(entries: readonly LedgerEntry[], contexts: ReadonlyMap<string, ToyContext>): ConditionStyles[] {
  const by = new Map<string, { n: number; right: number; stated: number; styles: Map<StyleLabel, { n: number; correct: number; total: number }> }>();
  for (const e of entries) {
    if (e.type !== 'inner' || e.phase !== 'eval' || e.selfEdit === null) continue;
    const ctx = contexts.get(e.context);
    if (!ctx) continue;
    const a = describeSelfEdit(ctx, e.selfEdit);
    let c = by.get(e.condition);
    if (!c) by.set(e.condition, (c = { n: 0, right: 0, stated: 0, styles: new Map() }));
    c.n++;
    c.right += a.right;
    c.stated += a.right + a.wrong;
    const s = c.styles.get(a.style) ?? { n: 0, correct: 0, total: 0 };
    s.n++;
    s.correct += (e as InnerEntry).correct;
    s.total += (e as InnerEntry).total;
    c.styles.set(a.style, s);
  }
  return [...by.entries()].map(([condition, c]) => ({
    condition,
    selfEdits: c.n,
    statementsTrue: c.stated > 0 ? c.right / c.stated : 0,
    styles: [...c.styles.entries()]
      .map(([style, s]) => ({ style, share: s.n / c.n, accuracy: s.total > 0 ? s.correct / s.total : 0 }))
      .sort((a, b) => b.share - a.share || a.style.localeCompare(b.style)),
  }));
}

/** A plain-text table: one row per condition, the styles by share with their accuracy. */
export function formatStyleReport(rows: readonly ConditionStyles[]): string {
  const pct = (x: number): string => `${(100 * x).toFixed(0)}%`;
  const width = Math.max(9, ...rows.map((r) => r.condition.length));
  const lines = [`${'condition'.padEnd(width)}  statements true  self-edit styles (share, accuracy with that style)`];
  for (const r of rows) {
    const styles = r.styles.map((s) => `${s.style} ${pct(s.share)} (${pct(s.accuracy)})`).join(', ');
    lines.push(`${r.condition.padEnd(width)}  ${pct(r.statementsTrue).padStart(15)}  ${styles}`);
  }
  return lines.join('\n');
}
