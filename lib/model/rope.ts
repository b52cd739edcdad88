// RoPE inverse frequencies for a model config: the table the native engine rotates q and k by
// (rotate-half pairing, as transformers does). Computed here so every backend uses the same
// numbers and the scaling variants live in one place.
//
// Precision: transformers computes this in float32 tensors; we compute in float64 and round once
// to float32, which is the correctly rounded value (transformers' may differ from it by an ulp).
import type { ModelConfig } from './hf-config.js';

/**
 * inv_freq[i] = 1 / θ^(2i/d) for i in [0, d/2), d = headDim, then the config's scaling:
 * - linear: inv_freq / factor;
 * - llama3 (transformers `_compute_llama3_parameters`): with wavelen = 2π / inv_freq, frequencies
 *   whose wavelength exceeds orig/low_freq_factor are divided by factor, those below
 *   orig/high_freq_factor are kept, and the band between blends the two with
 *   smooth = (orig/wavelen − low) / (high − low): (1 − smooth)·f/factor + smooth·f.
 */
export function ropeInvFreq(config: Pick<ModelConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>): Float32Array {
  const { headDim: d, ropeTheta: theta, ropeScaling: scaling } = config;
  if (!Number.isSafeInteger(d) || d <= 0 || d % 2 !== 0) throw new RangeError(`ropeInvFreq: headDim must be a positive even integer, got ${d}`);
  if (!(theta > 0) || !Number.isFinite(theta)) throw new RangeError(`ropeInvFreq: ropeTheta must be a positive number, got ${theta}`);
  const out = new Float32Array(d / 2);
  for (let i = 0; i < d / 2; i++) {
    const f = 1 / theta ** ((2 * i) / d);
    out[i] = scaling === null ? f : scaling.type === 'linear' ? f / scaling.factor : llama3(f, scaling);
  }
  return out;
}

function llama3(f: number, s: { factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number }): number {
  const orig = s.originalMaxPositionEmbeddings;
  const lowFreqWavelen = orig / s.lowFreqFactor;
  const highFreqWavelen = orig / s.highFreqFactor;
  const wavelen = (2 * Math.PI) / f;
  if (wavelen > lowFreqWavelen) return f / s.factor;
  if (wavelen < highFreqWavelen) return f;
  const smooth = (orig / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
  return ((1 - smooth) * f) / s.factor + smooth * f;
}
