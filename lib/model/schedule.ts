// Learning-rate schedules: the rate for optimiser step n (1-based) of `total`.
// Warmup is linear from lr/warmup at step 1 to lr at step `warmup`; the decay phase then runs over
// the remaining steps and reaches `minLr` (default 0) after the last one.
export type ScheduleKind = 'constant' | 'linear' | 'cosine';

export interface Schedule {
  kind: ScheduleKind;
  lr: number;
  total: number;
  warmup?: number;
  minLr?: number;
}

export function learningRate(s: Schedule, step: number): number {
  const warmup = s.warmup ?? 0;
  const minLr = s.minLr ?? 0;
  if (!(step >= 1)) throw new RangeError(`learningRate: step must be >= 1, got ${step}`);
  if (warmup > 0 && step <= warmup) return (s.lr * step) / warmup;
  if (s.kind === 'constant') return s.lr;
  const span = Math.max(1, s.total - warmup);
  const progress = Math.min(1, (step - warmup) / span);
  const factor = s.kind === 'linear' ? 1 - progress : 0.5 * (1 + Math.cos(Math.PI * progress));
  return minLr + (s.lr - minLr) * factor;
}
