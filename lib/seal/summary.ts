// Results of a run, computed from its ledger alone (so every number traces to ledger lines).
import type { InnerEntry, LedgerEntry, PolicyEntry } from './ledger.js';

export interface ConditionSummary {
  name: string;
  round: number;
  /** Question-level (micro) accuracy. */
  accuracy: number;
  /** Half-width of the 95% normal-approximation interval of the micro accuracy. */
  ci95: number;
  /** Mean over contexts of per-context accuracy (macro; the paper's number). */
  contextMean: number;
  questions: number;
  correct: number;
  contexts: number;
  invalidSelfEdits: number;
}

export interface RoundSummary {
  round: number;
  innerRuns: number;
  meanReward: number;
  kept: number;
  policyFinalLoss: number | null;
}

export interface RunSummary {
  conditions: ConditionSummary[];
  rounds: RoundSummary[];
}

export function summarize(entries: readonly LedgerEntry[], conditionOrder: readonly string[] = []): RunSummary {
  const evals = new Map<string, InnerEntry[]>();
  for (const e of entries) {
    if (e.type !== 'inner' || e.phase !== 'eval') continue;
    evals.set(e.condition, [...(evals.get(e.condition) ?? []), e]);
  }
  const names = [...evals.keys()].sort((a, b) => {
    const ia = conditionOrder.indexOf(a), ib = conditionOrder.indexOf(b);
    return (ia < 0 ? 1e9 : ia) - (ib < 0 ? 1e9 : ib) || a.localeCompare(b);
  });
  const conditions = names.map((name) => {
    const list = evals.get(name)!;
    const correct = list.reduce((a, e) => a + e.correct, 0);
    const questions = list.reduce((a, e) => a + e.total, 0);
    const p = questions > 0 ? correct / questions : 0;
    const perContext = new Map<string, { c: number; t: number }>();
    for (const e of list) {
      const x = perContext.get(e.context) ?? { c: 0, t: 0 };
      perContext.set(e.context, { c: x.c + e.correct, t: x.t + e.total });
    }
    const means = [...perContext.values()].filter((x) => x.t > 0).map((x) => x.c / x.t);
    return {
      name, round: list[0]?.round ?? 0, accuracy: p, ci95: questions > 0 ? 1.96 * Math.sqrt((p * (1 - p)) / questions) : 0,
      contextMean: means.length ? means.reduce((a, b) => a + b, 0) / means.length : 0,
      questions, correct, contexts: perContext.size, invalidSelfEdits: list.filter((e) => !e.valid).length,
    };
  });
  const rounds: RoundSummary[] = [];
  const policies = entries.filter((e): e is PolicyEntry => e.type === 'policy');
  for (const pol of policies) {
    const runs = entries.filter((e): e is InnerEntry => e.type === 'inner' && e.phase === 'train' && e.round === pol.round);
    rounds.push({
      round: pol.round, innerRuns: runs.length, meanReward: runs.length ? runs.reduce((a, e) => a + e.score, 0) / runs.length : 0,
      kept: pol.kept.length, policyFinalLoss: pol.finalLoss,
    });
  }
  return { conditions, rounds };
}

/** The paper-style table. */
export function formatTable(s: RunSummary): string {
  const rows = s.conditions.map((c) => [c.name, `${(100 * c.accuracy).toFixed(1)} ± ${(100 * c.ci95).toFixed(1)}`, `${(100 * c.contextMean).toFixed(1)}`, String(c.questions), String(c.contexts)]);
  const head = ['condition', 'accuracy % (95% CI)', 'per-context mean %', 'questions', 'contexts'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((x, i) => (i === 0 ? x.padEnd(widths[i]!) : x.padStart(widths[i]!))).join('  ');
  const out = [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)];
  if (s.rounds.length) {
    out.push('', 'ReST-EM rounds: ' + s.rounds.map((r) => `round ${r.round}: ${r.innerRuns} inner runs, mean reward ${(100 * r.meanReward).toFixed(1)}%, ${r.kept} self-edits kept, policy SFT loss ${r.policyFinalLoss?.toFixed(3) ?? '-'}`).join('; '));
  }
  return out.join('\n');
}
