// Real model configurations (as their config.json states them) for benchmarks and random-weight
// experiments: no weights are needed, only the shapes.
import { normaliseModelConfig, type ModelConfig } from './hf-config.js';

const RAW: Record<string, Record<string, unknown>> = {
  // HuggingFaceTB/SmolLM2-135M
  'smollm2-135m': {
    model_type: 'llama', architectures: ['LlamaForCausalLM'], vocab_size: 49152, hidden_size: 576, intermediate_size: 1536,
    num_hidden_layers: 30, num_attention_heads: 9, num_key_value_heads: 3, rms_norm_eps: 1e-5, rope_theta: 100000,
    max_position_embeddings: 8192, tie_word_embeddings: true, bos_token_id: 0, eos_token_id: 0, torch_dtype: 'bfloat16',
  },
  // meta-llama/Llama-3.2-1B
  'llama-3.2-1b': {
    model_type: 'llama', architectures: ['LlamaForCausalLM'], vocab_size: 128256, hidden_size: 2048, intermediate_size: 8192,
    num_hidden_layers: 16, num_attention_heads: 32, num_key_value_heads: 8, head_dim: 64, rms_norm_eps: 1e-5,
    rope_theta: 500000, rope_scaling: { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
    max_position_embeddings: 131072, tie_word_embeddings: true, bos_token_id: 128000, eos_token_id: 128001, torch_dtype: 'bfloat16',
  },
  // Qwen/Qwen2.5-0.5B
  'qwen2.5-0.5b': {
    model_type: 'qwen2', architectures: ['Qwen2ForCausalLM'], vocab_size: 151936, hidden_size: 896, intermediate_size: 4864,
    num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2, rms_norm_eps: 1e-6, rope_theta: 1000000,
    max_position_embeddings: 32768, tie_word_embeddings: true, bos_token_id: 151643, eos_token_id: 151643, torch_dtype: 'bfloat16',
  },
  // The small configuration SEAL-style inner loops stress (per-call overhead dominates).
  tiny: {
    model_type: 'llama', architectures: ['LlamaForCausalLM'], vocab_size: 512, hidden_size: 128, intermediate_size: 384,
    num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2, rms_norm_eps: 1e-5, rope_theta: 10000,
    max_position_embeddings: 2048, tie_word_embeddings: true, bos_token_id: 1, eos_token_id: 2, torch_dtype: 'float32',
  },
};

export const PRESET_NAMES = Object.keys(RAW);

export function presetConfig(name: string): ModelConfig {
  const raw = RAW[name];
  if (!raw) throw new Error(`unknown preset '${name}' (known: ${PRESET_NAMES.join(', ')})`);
  return normaliseModelConfig(structuredClone(raw), `preset ${name}`);
}

/** The preset's raw config.json object (for peers that build the same model). */
export function presetRawConfig(name: string): Record<string, unknown> {
  const raw = RAW[name];
  if (!raw) throw new Error(`unknown preset '${name}' (known: ${PRESET_NAMES.join(', ')})`);
  return structuredClone(raw);
}
