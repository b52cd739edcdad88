// What one decoding step reads from memory, for the bandwidth bounds `npm run bench` reports beside
// its decode rows: the weights (every one once per step, whatever the batch) and the KV cache (each
// sequence's own keys and values, growing with its length).
import type { ModelConfig } from '../model/hf-config.js';
import { linearParams } from './engine-bench.js';

/**
 * Bytes of weights one decode step reads at the storage width (2 per parameter for bf16, 4 for
 * f32): every projection (and q/k/v bias), the norms and the LM head. The LM head is the embedding
 * when tied; an untied embedding is only gathered (one row per sequence), so the vocab x hidden
 * matrix counts once either way.
 */
export function decodeWeightBytes(c: ModelConfig, storage: 'bf16' | 'f32'): number {
  // linearParams: the projections and the LM head; then two norms per layer, the final norm, biases.
  const bias = c.qkvBias ? (c.numHeads + 2 * c.numKvHeads) * c.headDim : 0;
  const params = linearParams(c) + c.numLayers * (2 * c.hiddenSize + bias) + c.hiddenSize;
  return params * (storage === 'bf16' ? 2 : 4);
}

/**
 * Bytes of KV cache one decode step reads, on average over a generation of `newTokens` after a
 * `prompt`: every layer's keys and values of each of `batch` sequences at the mean length, prompt +
 * new / 2 rows (step t attends to prompt + t), at 2 bytes per value for a bf16 cache, 4 for f32.
 */
export function decodeKvCacheBytes(c: ModelConfig, batch: number, prompt: number, newTokens: number, dtype: 'bf16' | 'f32'): number {
  const perRow = 2 * c.numKvHeads * c.headDim * (dtype === 'f32' ? 4 : 2);
  return batch * c.numLayers * perRow * (prompt + newTokens / 2);
}

/** Tokens/s that reading `bytesPerStep` once per step of `batch` tokens at `gbs` GB/s allows. */
export function streamingBound(batch: number, gbs: number, bytesPerStep: number): number {
  return (batch * gbs * 1e9) / bytesPerStep;
}
