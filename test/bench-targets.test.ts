// The performance targets as `npm run bench` judges them (lib/bench/targets.ts): ratio,
// MFU and bound verdicts at and around their thresholds, a ratio target beyond the bound, and the
// report's wording.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { describeBoundTarget, describeRatioTarget, describeTargetBeyondBound, targetVerdicts } from '../lib/bench/targets.js';

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

test.run();
