// The performance targets for a benchmark row, and the verdicts `npm run bench` prints and
// writes to its JSON summary: the engine's speed over the best PyTorch mode, training's MFU against
// the BF16 peak, and decoding's share of the weight-streaming bound; for training, how much of the
// compute bound (the step's FLOPs at the measured peaks) a ratio target asks for.

/** What a row is held to (each optional: the issue sets only some per row). */
export interface Targets {
  /** Engine tokens/s over the best peer mode's. */
  ratio?: number;
  /** Engine MFU against the BF16 peak (a fraction). */
  mfu?: number;
  /** Engine tokens/s as a share of the weight-streaming bound (a fraction; decoding). */
  bound?: number;
}

/** One run's figures for a row (null where the run did not produce them). */
export interface TargetInputs {
  engineTps: number | null;
  bestPeerTps: number | null;
  /** Engine MFU against the BF16 peak. */
  engineMfuBf16: number | null;
  /** Tokens/s that streaming the weights once per step at the measured bandwidth allows. */
  boundTps: number | null;
}

/** Each verdict is null where the row has no such target or the run lacks a figure it needs. */
export interface TargetVerdicts {
  target_engine_over_best_peer: number | null;
  target_met: boolean | null;
  /**
   * Whether the ratio target can be met on this machine at all: ratio x the best peer's tokens/s
   * within the weight-streaming bound (no engine streams its weights faster than memory reads them).
   */
  target_within_bound: boolean | null;
  mfu_target: number | null;
  mfu_target_met: boolean | null;
  bound_target: number | null;
  bound_target_met: boolean | null;
}

export function targetVerdicts(t: Targets, x: TargetInputs): TargetVerdicts {
  const ratio = x.engineTps !== null && x.bestPeerTps ? x.engineTps / x.bestPeerTps : null;
  const share = x.engineTps !== null && x.boundTps ? x.engineTps / x.boundTps : null;
  return {
    target_engine_over_best_peer: t.ratio ?? null,
    target_met: t.ratio !== undefined && ratio !== null ? ratio >= t.ratio : null,
    target_within_bound: t.ratio !== undefined && x.bestPeerTps && x.boundTps ? t.ratio * x.bestPeerTps <= x.boundTps : null,
    mfu_target: t.mfu ?? null,
    mfu_target_met: t.mfu !== undefined && x.engineMfuBf16 !== null ? x.engineMfuBf16 >= t.mfu : null,
    bound_target: t.bound ?? null,
    bound_target_met: t.bound !== undefined && share !== null ? share >= t.bound : null,
  };
}

const percent = (x: number) => `${+(100 * x).toFixed(1)}%`;

/**
 * The verdicts for the `engine / best peer` line: '' without a ratio verdict, else e.g.
 * "; target >=3x NOT met" or "; target >=1.5x met; MFU bf16 >=50% met".
 */
export function describeRatioTarget(v: TargetVerdicts): string {
  if (v.target_met === null || v.target_engine_over_best_peer === null) return '';
  const mfu = v.mfu_target_met === null || v.mfu_target === null ? '' : `; MFU bf16 >=${percent(v.mfu_target)} ${v.mfu_target_met ? 'met' : 'NOT met'}`;
  return `; target >=${v.target_engine_over_best_peer}x ${v.target_met ? 'met' : 'NOT met'}${mfu}`;
}

/**
 * A line of its own where a missed ratio target is above the weight-streaming bound, e.g.
 * "3x the peer (190.2 tokens/s) is above the bound: out of reach here"; else null.
 */
export function describeTargetBeyondBound(v: TargetVerdicts, bestPeerTps: number | null): string | null {
  if (v.target_met !== false || v.target_within_bound !== false || v.target_engine_over_best_peer === null || bestPeerTps === null) return null;
  const r = v.target_engine_over_best_peer;
  return `${r}x the peer (${(r * bestPeerTps).toFixed(1)} tokens/s) is above the bound: out of reach here`;
}

/** The `engine / bound` line's label, or null without a bound verdict. */
export function describeBoundTarget(v: TargetVerdicts): string | null {
  if (v.bound_target_met === null || v.bound_target === null) return null;
  return `engine / bound; target >=${percent(v.bound_target)} ${v.bound_target_met ? 'met' : 'NOT met'}`;
}

/**
 * Tokens/s of a training step whose every product ran at its instruction's measured peak and whose
 * other work (norms, softmax, the optimiser, memory traffic) took no time: an upper bound on any
 * engine's speed on the machine. `f32FlopsPerToken` of the `flopsPerToken` run at the FP32 FMA peak
 * (LoRA's products; all of them for f32 weights), the rest at `peakGflops` (bf16 weights' products
 * at the BF16 peak). Null without both peaks.
 */
export function computeBoundTps(flopsPerToken: number, f32FlopsPerToken: number, peakGflops: number | null,
  peakFp32Gflops: number | null): number | null {
  if (!peakGflops || !peakFp32Gflops || flopsPerToken <= 0) return null;
  const f32 = Math.min(Math.max(f32FlopsPerToken, 0), flopsPerToken);
  const secondsPerToken = (flopsPerToken - f32) / (peakGflops * 1e9) + f32 / (peakFp32Gflops * 1e9);
  return 1 / secondsPerToken;
}

/**
 * The line under a training row whose ratio target was missed: what that target asks of the
 * compute bound, against what the engine reached, e.g. "the target (5x the peer: 154,260 tokens/s)
 * is 85.2% of the compute bound; the engine ran at 51.4% of it". Null where the target was met or a
 * figure is missing.
 */
export function describeTargetOfComputeBound(v: TargetVerdicts, bestPeerTps: number | null, boundTps: number | null,
  engineTps: number | null): string | null {
  if (v.target_met !== false || v.target_engine_over_best_peer === null || !bestPeerTps || !boundTps || engineTps === null) return null;
  const r = v.target_engine_over_best_peer;
  const needed = r * bestPeerTps;
  const beyond = needed > boundTps ? ': out of reach here' : '';
  return `the target (${r}x the peer: ${Math.round(needed).toLocaleString('en-US')} tokens/s) is ${percent(needed / boundTps)} ` +
    `of the compute bound${beyond}; the engine ran at ${percent(engineTps / boundTps)} of it`;
}
