// Per-op profiles of benchmark steps (`seal bench ... --profile`): the backend calls a model made
// with { profile: true } timed (lib/model/model.ts takeProfile), turned into per-step figures and a
// table. Time outside backend calls (JS, host code between ops) is reported as "host".
import type { OpTiming } from '../model/native-model.js';

export interface ProfileRow {
  /** The op, and for GEMMs its orientation (op(A) op(B), N or T), M x N x K and weight type. */
  op: string;
  calls_per_step: number;
  ms_per_step: number;
  /** Share of the step's wall time. */
  share: number;
  /** GFLOP/s of this kind of call (GEMMs only). */
  gflops: number | null;
}

export interface StepProfile {
  /** What one step is: a training or scoring call, or one decoding step (prefill excluded). */
  unit: string;
  steps: number;
  step_ms: number;
  /** Step time not spent inside backend calls. */
  host_ms_per_step: number;
  ops: ProfileRow[];
}

/** One entry per op: calls, seconds and FLOPs of every entry for it added up, largest time first. */
export function mergeTimings(timings: readonly OpTiming[]): OpTiming[] {
  const byOp = new Map<string, OpTiming>();
  for (const t of timings) {
    const m = byOp.get(t.op);
    if (m) {
      m.calls += t.calls;
      m.seconds += t.seconds;
      m.flops += t.flops;
    } else {
      byOp.set(t.op, { ...t });
    }
  }
  return [...byOp.values()].sort((a, b) => b.seconds - a.seconds);
}

/** Per-step figures from the timings of `steps` steps that took `totalMs` of wall time together. */
export function summariseProfile(timings: readonly OpTiming[], steps: number, totalMs: number, unit: string): StepProfile {
  if (!(steps > 0) || !(totalMs > 0)) throw new RangeError('summariseProfile: steps and totalMs must be positive');
  const stepMs = totalMs / steps;
  const ops = timings.map((t) => ({
    op: t.op,
    calls_per_step: t.calls / steps,
    ms_per_step: (t.seconds * 1000) / steps,
    share: (t.seconds * 1000) / totalMs,
    gflops: t.flops > 0 && t.seconds > 0 ? t.flops / t.seconds / 1e9 : null,
  }));
  const inOps = ops.reduce((s, r) => s + r.ms_per_step, 0);
  return { unit, steps, step_ms: stepMs, host_ms_per_step: Math.max(0, stepMs - inOps), ops };
}

/** A text table of the `top` largest rows, the rest folded into one line, and the host time. */
export function formatProfile(p: StepProfile, top = 25): string {
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const lines = [`profile: ${p.steps} ${p.unit}s, ${p.step_ms.toFixed(3)} ms per ${p.unit} (each backend call timed to its end)`];
  const width = Math.min(60, Math.max(10, ...p.ops.slice(0, top).map((r) => r.op.length)));
  lines.push(`  ${'op'.padEnd(width)}  ${'calls'.padStart(7)}  ${'ms'.padStart(9)}  ${'share'.padStart(6)}  GFLOP/s`);
  for (const r of p.ops.slice(0, top)) {
    lines.push(`  ${r.op.padEnd(width)}  ${r.calls_per_step.toFixed(1).padStart(7)}  ${r.ms_per_step.toFixed(3).padStart(9)}  ${pct(r.share).padStart(6)}  ${r.gflops === null ? '' : r.gflops.toFixed(1)}`);
  }
  const rest = p.ops.slice(top);
  if (rest.length) {
    const ms = rest.reduce((s, r) => s + r.ms_per_step, 0);
    const calls = rest.reduce((s, r) => s + r.calls_per_step, 0);
    lines.push(`  ${`(${rest.length} more kinds)`.padEnd(width)}  ${calls.toFixed(1).padStart(7)}  ${ms.toFixed(3).padStart(9)}  ${pct(ms / p.step_ms).padStart(6)}`);
  }
  lines.push(`  ${'host (outside backend calls)'.padEnd(width)}  ${''.padStart(7)}  ${p.host_ms_per_step.toFixed(3).padStart(9)}  ${pct(p.host_ms_per_step / p.step_ms).padStart(6)}`);
  return `${lines.join('\n')}\n`;
}
