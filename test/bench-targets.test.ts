// The performance targets as `npm run bench` judges them (lib/bench/targets.ts): ratio,
// MFU and bound verdicts at and around their thresholds, a ratio target beyond the bound, training's
// compute bound, and the report's wording.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { presetConfig } from '../lib/model/presets.js';
import { flopsPerToken, loraFlopsPerToken } from '../lib/bench/engine-bench.js';
import {
  computeBoundTps, describeBoundTarget, describeRatioTarget, describeTargetBeyondBound, describeTargetOfComputeBound, targetVerdicts,
} from '../lib/bench/targets.js';

const none = { engineTps: null, bestPeerTps: null, engineMfuBf16: null, boundTps: null };

test('targetVerdicts: a row without targets has no verdicts, whatever its figures', () => {
  const v = targetVerdicts({}, { engineTps: 100, bestPeerTps: 10, engineMfuBf16: 0.9, boundTps: 120 });
  assert.equal(v, {
    target_engine_over_best_peer: null, target_met: null, target_within_bound: null,
    mfu_target: null, mfu_target_met: null, bound_target: null, bound_target_met: null,
  });
  assert.is(describeRatioTarget(v), '');
  assert.is(describeBoundTarget(v), null);
  assert.is(describeTargetBeyondBound(v, 10), null);
});

test('targetVerdicts: the ratio target is met at and above the threshold, not below', () => {
  const at = targetVerdicts({ ratio: 1.5 }, { ...none, engineTps: 150, bestPeerTps: 100 });
  assert.is(at.target_met, true);
  assert.is(targetVerdicts({ ratio: 1.5 }, { ...none, engineTps: 149.9, bestPeerTps: 100 }).target_met, false);
  // Missing figures give no verdict rather than a false one.
  assert.is(targetVerdicts({ ratio: 1.5 }, { ...none, engineTps: 150 }).target_met, null);
  assert.is(targetVerdicts({ ratio: 1.5 }, { ...none, bestPeerTps: 100 }).target_met, null);
  assert.is(describeRatioTarget(at), '; target >=1.5x met');
});

test('targetVerdicts: training\'s MFU target is judged beside the ratio', () => {
  const v = targetVerdicts({ ratio: 1.5, mfu: 0.5 }, { ...none, engineTps: 160, bestPeerTps: 100, engineMfuBf16: 0.499 });
  assert.is(v.target_met, true);
  assert.is(v.mfu_target_met, false);
  assert.is(describeRatioTarget(v), '; target >=1.5x met; MFU bf16 >=50% NOT met');
  assert.is(targetVerdicts({ mfu: 0.5 }, { ...none, engineMfuBf16: 0.5 }).mfu_target_met, true);
});

test('targetVerdicts: a decode ratio target above the weight-streaming bound is reported as such', () => {
  // 3 x 63.4 = 190.2 tokens/s > the 188.0 bound: out of reach for any engine on that machine.
  const beyond = targetVerdicts({ ratio: 3, bound: 0.7 }, { ...none, engineTps: 145.3, bestPeerTps: 63.4, boundTps: 188.0 });
  assert.is(beyond.target_met, false);
  assert.is(beyond.target_within_bound, false);
  assert.is(beyond.bound_target_met, true);
  assert.is(describeRatioTarget(beyond), '; target >=3x NOT met');
  assert.is(describeTargetBeyondBound(beyond, 63.4), '3x the peer (190.2 tokens/s) is above the bound: out of reach here');
  assert.is(describeBoundTarget(beyond), 'engine / bound; target >=70% met');
  // Within the bound, a missed target carries no such note.
  const within = targetVerdicts({ ratio: 3, bound: 0.7 }, { ...none, engineTps: 130, bestPeerTps: 50, boundTps: 188.0 });
  assert.is(within.target_within_bound, true);
  assert.is(within.bound_target_met, false);
  assert.is(describeRatioTarget(within), '; target >=3x NOT met');
  assert.is(describeTargetBeyondBound(within, 50), null);
  assert.is(describeBoundTarget(within), 'engine / bound; target >=70% NOT met');
  // No bound measured (no peak program): no reachability or bound verdict.
  const unmeasured = targetVerdicts({ ratio: 3, bound: 0.7 }, { ...none, engineTps: 130, bestPeerTps: 50 });
  assert.is(unmeasured.target_within_bound, null);
  assert.is(unmeasured.bound_target_met, null);
});

test('computeBoundTps: each product at its own peak, times added; no bound without both peaks', () => {
  // 1,000 FLOPs a token, 200 of them f32: 800 / 800e9 + 200 / 400e9 s = 1.5e-9 s a token.
  assert.ok(Math.abs(computeBoundTps(1000, 200, 800, 400)! - 1 / 1.5e-9) < 1e-3);
  // Everything f32 (f32 weights): the FP32 peak alone, whatever the other.
  assert.ok(Math.abs(computeBoundTps(1000, 1000, 800, 400)! - 4e8) < 1e-3);
  // The f32 share is clamped to [0, total].
  assert.is(computeBoundTps(1000, 5000, 800, 400), computeBoundTps(1000, 1000, 800, 400));
  assert.is(computeBoundTps(1000, -5, 800, 400), computeBoundTps(1000, 0, 800, 400));
  assert.is(computeBoundTps(1000, 200, null, 400), null);
  assert.is(computeBoundTps(1000, 200, 800, null), null);
  assert.is(computeBoundTps(0, 0, 800, 400), null);
  // The tiny preset's LoRA step: LoRA's products are 18 % of its FLOPs at 256 tokens (rank 16), the
  // share flopsPerToken and loraFlopsPerToken give together.
  const tiny = presetConfig('tiny');
  const share = loraFlopsPerToken(tiny, 16) / flopsPerToken(tiny, 256, 'train', 16);
  assert.ok(share > 0.17 && share < 0.19, `LoRA's share ${share}`);
});

test('describeTargetOfComputeBound: a missed training target as a share of the compute bound', () => {
  // The tiny preset's 4 x 256 row of the quiet 2026-12-07 05:23 run: peer 30,852 tokens/s, engine
  // 93,013, compute bound ~181,000.
  const v = targetVerdicts({ ratio: 5 }, { ...none, engineTps: 93_013, bestPeerTps: 30_852 });
  assert.is(describeTargetOfComputeBound(v, 30_852, 181_000, 93_013),
    'the target (5x the peer: 154,260 tokens/s) is 85.2% of the compute bound; the engine ran at 51.4% of it');
  // Above the bound: out of reach.
  assert.is(describeTargetOfComputeBound(v, 40_000, 181_000, 93_013),
    'the target (5x the peer: 200,000 tokens/s) is 110.5% of the compute bound: out of reach here; the engine ran at 51.4% of it');
  // A met target, or a missing figure: no line.
  const met = targetVerdicts({ ratio: 1.5 }, { ...none, engineTps: 160, bestPeerTps: 100 });
  assert.is(describeTargetOfComputeBound(met, 100, 1000, 160), null);
  assert.is(describeTargetOfComputeBound(v, 30_852, null, 93_013), null);
  assert.is(describeTargetOfComputeBound(v, null, 181_000, 93_013), null);
});

test.run();
