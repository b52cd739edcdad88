// The bytes a decoding step reads, behind `npm run bench`'s bandwidth bounds
// (lib/bench/decode-bytes.ts), counted out by hand here for the presets' real configurations.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { decodeKvCacheBytes, decodeWeightBytes, streamingBound } from '../lib/bench/decode-bytes.js';
import { presetConfig } from '../lib/model/presets.js';

test('decodeWeightBytes: SmolLM2-135M, every projection, norm and the tied LM head once', () => {
  // Per layer: q 576x576, k and v 192x576, o 576x576, gate/up/down 576x1536 each, two norms of 576.
  const perLayer = 576 * 576 + 2 * 192 * 576 + 576 * 576 + 3 * 576 * 1536 + 2 * 576;
  const params = 30 * perLayer + 49152 * 576 + 576;  // the embedding read once as the LM head, the final norm
  assert.is(params, 134_515_008);
  assert.is(decodeWeightBytes(presetConfig('smollm2-135m'), 'bf16'), 2 * params);
  assert.is(decodeWeightBytes(presetConfig('smollm2-135m'), 'f32'), 4 * params);
});

test('decodeWeightBytes: q/k/v biases count where the model has them (Qwen2.5)', () => {
  const c = presetConfig('qwen2.5-0.5b');
  assert.ok(c.qkvBias);
  const noBias = decodeWeightBytes({ ...c, qkvBias: false }, 'bf16');
  // 14 heads and 2 kv heads of 64: 896 + 2 x 128 bias values per layer, 24 layers, 2 bytes each.
  assert.is(decodeWeightBytes(c, 'bf16') - noBias, 24 * (896 + 2 * 128) * 2);
});

test('decodeKvCacheBytes: keys and values of every layer and sequence at the mean length', () => {
  const c = presetConfig('smollm2-135m');
  // 3 kv heads of 64: a row of keys and values is 2 x 192 values; 128 + 256 / 2 = 256 rows on average.
  assert.is(decodeKvCacheBytes(c, 8, 128, 256, 'bf16'), 8 * 30 * 2 * 192 * 2 * 256);
  assert.is(decodeKvCacheBytes(c, 8, 128, 128, 'f32'), 2 * decodeKvCacheBytes(c, 8, 128, 128, 'bf16'));
  assert.is(decodeKvCacheBytes(c, 1, 128, 128, 'bf16') * 8, decodeKvCacheBytes(c, 8, 128, 128, 'bf16'));
});

test('streamingBound: batch tokens per pass over the bytes at the bandwidth', () => {
  assert.is(streamingBound(1, 50, 500e6), 100);
  assert.is(streamingBound(8, 50, 500e6), 800);
  // SmolLM2 at batch 8, 128 + 128, bf16: the cache lowers the weights-only bound by its share of the bytes.
  const c = presetConfig('smollm2-135m');
  const w = decodeWeightBytes(c, 'bf16'), kv = decodeKvCacheBytes(c, 8, 128, 128, 'bf16');
  assert.ok(Math.abs(streamingBound(8, 47.9, w + kv) / streamingBound(8, 47.9, w) - w / (w + kv)) < 1e-12);
});

test.run();
