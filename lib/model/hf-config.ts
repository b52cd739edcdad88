// Hugging Face `config.json` (+ `generation_config.json`) → one normalised ModelConfig for the
// llama, qwen2 and mistral architectures, and the way back (writeModelConfig).
//
// Both config generations are accepted: transformers v4 writes top-level `rope_theta` and
// `rope_scaling` (`type` or `rope_type`); v5 writes `rope_parameters: {rope_type, rope_theta, ...}`
// and renames `torch_dtype` to `dtype`. Anything the engine does not implement is refused with a
// message naming the file and field — a config we would silently run differently from
// transformers is worse than one we refuse.
//
// Defaults: fields released configs legitimately omit take the defaults of transformers' config
// classes (LlamaConfig, Qwen2Config, MistralConfig; see ARCH_DEFAULTS). The structural sizes
// (vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads) are
// required even though the classes default them to 7B-sized values: a config.json without them is
// broken, and inventing a 4096-wide model would be exactly the silent default the house forbids.
import { randomBytes } from 'node:crypto';
import { rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { ModelFormatError, describeValue } from './format-error.js';
import { isMissingFile, readJsonObject } from './json-file.js';

export const SUPPORTED_ARCHITECTURES = ['llama', 'qwen2', 'mistral'] as const;
export type Architecture = (typeof SUPPORTED_ARCHITECTURES)[number];

export type RopeScaling =
  | null
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    }
  | { type: 'linear'; factor: number };

export type TorchDtype = 'float32' | 'bfloat16' | 'float16';

/** A model configuration in the engine's terms. Field comments give the HF source field. */
export interface ModelConfig {
  /** `model_type`. */
  architecture: Architecture;
  /** `vocab_size`: rows of the embedding and of lm_head. */
  vocabSize: number;
  /** `hidden_size`. */
  hiddenSize: number;
  /** `intermediate_size`: width of the SwiGLU MLP. */
  intermediateSize: number;
  /** `num_hidden_layers`. */
  numLayers: number;
  /** `num_attention_heads`. */
  numHeads: number;
  /** `num_key_value_heads` (grouped-query attention); divides numHeads. */
  numKvHeads: number;
  /** `head_dim`, else hiddenSize / numHeads. Even (RoPE rotates pairs). */
  headDim: number;
  /** `rms_norm_eps`. */
  rmsNormEps: number;
  /** `rope_theta` (v4) or `rope_parameters.rope_theta` (v5). */
  ropeTheta: number;
  /** `rope_scaling` (v4) or `rope_parameters` (v5); rope_type "default" is null. */
  ropeScaling: RopeScaling;
  /** `max_position_embeddings`. */
  maxPositionEmbeddings: number;
  /** `tie_word_embeddings`: lm_head shares the embedding matrix. */
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry a bias: always for qwen2 (not a config flag there); never otherwise. */
  qkvBias: boolean;
  /**
   * Attention window in tokens, or null for full causal attention. Only mistral uses one
   * (`sliding_window`, 4096 in v0.1). The engine implements full attention, which agrees with a
   * window for sequences no longer than it: callers must refuse longer sequences.
   */
  slidingWindow: number | null;
  /** `bos_token_id`. */
  bosTokenId: number | null;
  /** `eos_token_id` (int or list), followed by any further ids from generation_config.json. */
  eosTokenIds: number[];
  /** `torch_dtype` (v4) or `dtype` (v5): the dtype the weights were published in. */
  torchDtype: TorchDtype | null;
  /** config.json as parsed, so a saved model carries every field we do not model. */
  raw: Record<string, unknown>;
}

/**
 * transformers' defaults, per architecture, for the fields released configs may omit:
 * - llama   (LlamaConfig):   rms_norm_eps 1e-6, rope_theta 10000, max_position_embeddings 2048,
 *   tie_word_embeddings False, bos 1, eos 2, num_key_value_heads None (→ heads), no sliding window.
 * - qwen2   (Qwen2Config):   rms_norm_eps 1e-6, rope_theta 10000, max_position_embeddings 32768,
 *   tie_word_embeddings False, bos/eos None (PretrainedConfig), num_key_value_heads 32,
 *   use_sliding_window False (so sliding_window 4096 is inert).
 * - mistral (MistralConfig): rms_norm_eps 1e-6, rope_theta 10000, max_position_embeddings 4096·32,
 *   tie_word_embeddings False, bos 1, eos 2, num_key_value_heads 8, sliding_window 4096.
 * All three: hidden_act "silu", head_dim None (→ hidden_size // heads); an explicit null
 * num_key_value_heads means "= heads" in every class.
 */
const ARCH_DEFAULTS: Record<Architecture, {
  rmsNormEps: number; ropeTheta: number; maxPositionEmbeddings: number; tieWordEmbeddings: boolean;
  bosTokenId: number | null; eosTokenIds: number[]; numKvHeads: number | 'heads'; slidingWindow: number | null;
}> = {
  llama: { rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 2048, tieWordEmbeddings: false, bosTokenId: 1, eosTokenIds: [2], numKvHeads: 'heads', slidingWindow: null },
  qwen2: { rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 32768, tieWordEmbeddings: false, bosTokenId: null, eosTokenIds: [], numKvHeads: 32, slidingWindow: null },
  mistral: { rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 4096 * 32, tieWordEmbeddings: false, bosTokenId: 1, eosTokenIds: [2], numKvHeads: 8, slidingWindow: 4096 },
};

const CAUSAL_LM_CLASS: Record<Architecture, string> = {
  llama: 'LlamaForCausalLM',
  qwen2: 'Qwen2ForCausalLM',
  mistral: 'MistralForCausalLM',
};

// Every check carries the "expected …" wording the error message shows.
const expecting = (what: string) => ({ error: what });
const positiveInt = z.int(expecting('a positive integer')).positive(expecting('a positive integer'));
const positiveNumber = z.number(expecting('a positive number')).positive(expecting('a positive number'));
const boolean = z.boolean(expecting('true or false'));
const tokenId = z.int(expecting('a non-negative integer token id')).nonnegative(expecting('a non-negative integer token id'));
const tokenIds = z.union([tokenId, z.array(tokenId)], expecting('a token id or a list of token ids'));
const torchDtype = z.enum(['float32', 'bfloat16', 'float16'], expecting('"float32", "bfloat16" or "float16"'));
const ropeObject = z.record(z.string(), z.unknown(), expecting('an object or null'));

const ConfigSchema = z.looseObject({
  vocab_size: positiveInt,
  hidden_size: positiveInt,
  intermediate_size: positiveInt,
  num_hidden_layers: positiveInt,
  num_attention_heads: positiveInt,
  num_key_value_heads: positiveInt.nullish(),
  head_dim: positiveInt.nullish(),
  hidden_act: z.string(expecting('a string')).optional(),
  rms_norm_eps: positiveNumber.optional(),
  rope_theta: positiveNumber.optional(),
  rope_scaling: ropeObject.nullish(),
  rope_parameters: ropeObject.nullish(),
  max_position_embeddings: positiveInt.optional(),
  tie_word_embeddings: boolean.optional(),
  attention_bias: boolean.optional(),
  mlp_bias: boolean.optional(),
  use_sliding_window: boolean.optional(),
  sliding_window: positiveInt.nullish(),
  layer_types: z.array(z.string(), expecting('a list of strings')).nullish(),
  bos_token_id: tokenId.nullish(),
  eos_token_id: tokenIds.nullish(),
  torch_dtype: torchDtype.nullish(),
  dtype: torchDtype.nullish(),
});

const GenerationConfigSchema = z.looseObject({ eos_token_id: tokenIds.nullish() });

const LinearSchema = z.looseObject({ factor: positiveNumber });
const Llama3Schema = z.looseObject({
  factor: positiveNumber,
  low_freq_factor: positiveNumber,
  high_freq_factor: positiveNumber,
  original_max_position_embeddings: positiveInt,
});

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v = root;
  for (const key of path) {
    if (typeof v !== 'object' || v === null) return undefined;
    v = (v as Record<PropertyKey, unknown>)[key];
  }
  return v;
}

/** Parses with zod and turns the first issue into "file: field "x": expected …, found …". */
function parseWith<T extends z.ZodType>(schema: T, value: unknown, file: string, prefix: string): z.infer<T> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const field = [prefix, ...issue.path.map(String)].filter((p) => p !== '').join('.');
  throw new ModelFormatError(file, `field "${field}"`, `expected ${issue.message}, found ${describeValue(valueAt(value, issue.path))}`);
}

function parseRopeScaling(file: string, field: string, src: Record<string, unknown>): RopeScaling {
  const ropeType = src.rope_type;
  const legacyType = src.type;
  if (ropeType !== undefined && legacyType !== undefined && ropeType !== legacyType) {
    throw new ModelFormatError(file, `field "${field}"`, `has both rope_type ${describeValue(ropeType)} and type ${describeValue(legacyType)}; expected them to agree`);
  }
  const type = ropeType ?? legacyType;
  const supported = '"default", "linear" or "llama3"';
  if (typeof type !== 'string') {
    throw new ModelFormatError(file, `field "${field}.rope_type"`, `expected ${supported}, found ${describeValue(type)}`);
  }
  switch (type) {
    case 'default':
      return null;
    case 'linear':
      return { type: 'linear', factor: parseWith(LinearSchema, src, file, field).factor };
    case 'llama3': {
      const p = parseWith(Llama3Schema, src, file, field);
      if (!(p.high_freq_factor > p.low_freq_factor)) {
        throw new ModelFormatError(file, `field "${field}.high_freq_factor"`, `expected a value greater than low_freq_factor ${p.low_freq_factor}, found ${p.high_freq_factor}`);
      }
      return {
        type: 'llama3',
        factor: p.factor,
        lowFreqFactor: p.low_freq_factor,
        highFreqFactor: p.high_freq_factor,
        originalMaxPositionEmbeddings: p.original_max_position_embeddings,
      };
    }
    case 'dynamic': case 'yarn': case 'longrope': case 'su': case 'proportional':
      throw new ModelFormatError(file, `field "${field}.rope_type"`, `${describeValue(type)} RoPE scaling is not supported yet; supported: ${supported}`);
    default:
      throw new ModelFormatError(file, `field "${field}.rope_type"`, `unknown RoPE type ${describeValue(type)}; supported: ${supported}`);
  }
}

function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => sameValue((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/** RoPE base and scaling from either the v5 `rope_parameters` or the v4 top-level fields. */
function parseRope(file: string, cfg: z.infer<typeof ConfigSchema>, defaultTheta: number): { theta: number; scaling: RopeScaling } {
  const params = cfg.rope_parameters ?? null;
  const legacy = cfg.rope_scaling ?? null;
  // v5 keeps `rope_scaling` as an alias of `rope_parameters`; both present must mean the same.
  const fromParams = params === null ? undefined : parseRopeScaling(file, 'rope_parameters', params);
  const fromLegacy = legacy === null ? undefined : parseRopeScaling(file, 'rope_scaling', legacy);
  if (fromParams !== undefined && fromLegacy !== undefined && !sameValue(fromParams, fromLegacy)) {
    throw new ModelFormatError(file, 'field "rope_parameters"', `disagrees with field "rope_scaling" (${describeValue(legacy)}); expected one of them, or both the same`);
  }
  let theta = cfg.rope_theta;
  for (const [name, src] of [['rope_parameters', params], ['rope_scaling', legacy]] as const) {
    if (src === null || src.rope_theta === undefined) continue;
    const t = parseWith(positiveNumber, src.rope_theta, file, `${name}.rope_theta`);
    if (theta !== undefined && theta !== t) {
      throw new ModelFormatError(file, `field "${name}.rope_theta"`, `is ${t} but rope_theta elsewhere in the file is ${theta}; expected one value`);
    }
    theta = t;
  }
  const partial = params?.partial_rotary_factor;
  if (partial !== undefined && partial !== 1) {
    throw new ModelFormatError(file, 'field "rope_parameters.partial_rotary_factor"', `expected 1 (partial rotary embeddings are not supported), found ${describeValue(partial)}`);
  }
  return { theta: theta ?? defaultTheta, scaling: fromParams ?? fromLegacy ?? null };
}

/**
 * Normalises a parsed config.json. `generationEos` are further end-of-sequence ids (from
 * generation_config.json), appended after the config's own.
 */
export function normaliseModelConfig(raw: Record<string, unknown>, file: string, generationEos: number[] = []): ModelConfig {
  const modelType = raw.model_type;
  const supported = SUPPORTED_ARCHITECTURES.map((a) => `"${a}"`).join(', ');
  if (typeof modelType !== 'string' || !(SUPPORTED_ARCHITECTURES as readonly string[]).includes(modelType)) {
    throw new ModelFormatError(file, 'field "model_type"', `unsupported model type ${describeValue(modelType)}; supported: ${supported}`);
  }
  const arch = modelType as Architecture;
  const d = ARCH_DEFAULTS[arch];
  const cfg = parseWith(ConfigSchema, raw, file, '');

  const act = cfg.hidden_act ?? 'silu';
  // transformers' ACT2FN maps "swish" to the same SiLU.
  if (act !== 'silu' && act !== 'swish') {
    throw new ModelFormatError(file, 'field "hidden_act"', `expected "silu" (the only MLP activation the engine implements), found ${describeValue(act)}`);
  }
  if (cfg.mlp_bias === true) {
    throw new ModelFormatError(file, 'field "mlp_bias"', 'is true; MLP biases are not supported (expected false or absent)');
  }
  if (cfg.use_sliding_window === true) {
    throw new ModelFormatError(file, 'field "use_sliding_window"', 'is true; sliding-window attention is not supported for qwen2 (expected false)');
  }
  const sliding = cfg.layer_types?.findIndex((t) => t !== 'full_attention') ?? -1;
  if (sliding >= 0) {
    throw new ModelFormatError(file, `field "layer_types.${sliding}"`, `expected "full_attention" (other attention kinds are not supported), found ${describeValue(cfg.layer_types?.[sliding])}`);
  }

  let qkvBias: boolean;
  if (arch === 'qwen2') {
    qkvBias = true; // Qwen2Attention: q/k/v bias=True, o_proj none; attention_bias is not read.
  } else if (cfg.attention_bias === true) {
    // LlamaAttention puts attention_bias on o_proj too, which the engine does not implement;
    // MistralAttention hard-codes bias=False, so transformers would ignore the flag.
    throw new ModelFormatError(file, 'field "attention_bias"', `is true; ${arch === 'llama' ? 'attention biases (q/k/v/o) are not supported for llama' : 'mistral has no attention biases in transformers'} (expected false or absent)`);
  } else {
    qkvBias = false;
  }

  const numHeads = cfg.num_attention_heads;
  let numKvHeads: number;
  if (cfg.num_key_value_heads !== undefined && cfg.num_key_value_heads !== null) numKvHeads = cfg.num_key_value_heads;
  else if (cfg.num_key_value_heads === null || d.numKvHeads === 'heads') numKvHeads = numHeads;
  else numKvHeads = d.numKvHeads;
  if (numHeads % numKvHeads !== 0) {
    const where = cfg.num_key_value_heads === undefined ? ` (absent: the ${arch} default)` : '';
    throw new ModelFormatError(file, 'field "num_key_value_heads"', `${numKvHeads}${where} does not divide num_attention_heads ${numHeads}; expected a divisor`);
  }
  let headDim: number;
  if (cfg.head_dim !== undefined && cfg.head_dim !== null) {
    headDim = cfg.head_dim;
  } else {
    if (cfg.hidden_size % numHeads !== 0) {
      throw new ModelFormatError(file, 'field "hidden_size"', `${cfg.hidden_size} is not divisible by num_attention_heads ${numHeads} and head_dim is absent; expected a multiple, or an explicit head_dim`);
    }
    headDim = cfg.hidden_size / numHeads;
  }
  if (headDim % 2 !== 0) {
    throw new ModelFormatError(file, 'field "head_dim"', `${headDim} is odd; expected an even head dimension (RoPE rotates pairs)`);
  }

  const rope = parseRope(file, cfg, d.ropeTheta);

  let slidingWindow: number | null = null;
  if (arch === 'mistral') slidingWindow = cfg.sliding_window === undefined ? d.slidingWindow : cfg.sliding_window;

  const eos = cfg.eos_token_id === undefined ? d.eosTokenIds : cfg.eos_token_id === null ? [] : Array.isArray(cfg.eos_token_id) ? cfg.eos_token_id : [cfg.eos_token_id];
  const eosTokenIds = [...eos];
  for (const id of generationEos) if (!eosTokenIds.includes(id)) eosTokenIds.push(id);

  if (cfg.torch_dtype != null && cfg.dtype != null && cfg.torch_dtype !== cfg.dtype) {
    throw new ModelFormatError(file, 'field "dtype"', `is ${describeValue(cfg.dtype)} but torch_dtype is ${describeValue(cfg.torch_dtype)}; expected them to agree`);
  }

  return {
    architecture: arch,
    vocabSize: cfg.vocab_size,
    hiddenSize: cfg.hidden_size,
    intermediateSize: cfg.intermediate_size,
    numLayers: cfg.num_hidden_layers,
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: cfg.rms_norm_eps ?? d.rmsNormEps,
    ropeTheta: rope.theta,
    ropeScaling: rope.scaling,
    maxPositionEmbeddings: cfg.max_position_embeddings ?? d.maxPositionEmbeddings,
    tieWordEmbeddings: cfg.tie_word_embeddings ?? d.tieWordEmbeddings,
    qkvBias,
    slidingWindow,
    bosTokenId: cfg.bos_token_id === undefined ? d.bosTokenId : cfg.bos_token_id,
    eosTokenIds,
    torchDtype: cfg.torch_dtype ?? cfg.dtype ?? null,
    raw,
  };
}

/**
 * Reads `config.json` (and `generation_config.json` when present, for its eos ids) from a Hugging
 * Face model directory. Throws ModelFormatError naming the file and field on anything unsupported.
 */
export async function readModelConfig(dir: string): Promise<ModelConfig> {
  const file = join(dir, 'config.json');
  const raw = await readJsonObject(file, 'a Hugging Face model directory with a config.json');
  // Validate config.json before looking at its companion, so its errors come first.
  normaliseModelConfig(raw, file);
  const genFile = join(dir, 'generation_config.json');
  let generationEos: number[] = [];
  let gen: Record<string, unknown> | undefined;
  try {
    gen = await readJsonObject(genFile, 'generation_config.json');
  } catch (err) {
    if (!isMissingFile(err)) throw err;
  }
  if (gen !== undefined) {
    const eos = parseWith(GenerationConfigSchema, gen, genFile, '').eos_token_id;
    generationEos = eos == null ? [] : Array.isArray(eos) ? eos : [eos];
  }
  return normaliseModelConfig(raw, file, generationEos);
}

function setRope(raw: Record<string, unknown>, theta: number, scaling: RopeScaling): void {
  const hf: Record<string, unknown> =
    scaling === null ? { rope_type: 'default' }
    : scaling.type === 'linear' ? { rope_type: 'linear', factor: scaling.factor }
    : {
        rope_type: 'llama3',
        factor: scaling.factor,
        low_freq_factor: scaling.lowFreqFactor,
        high_freq_factor: scaling.highFreqFactor,
        original_max_position_embeddings: scaling.originalMaxPositionEmbeddings,
      };
  if (raw.rope_parameters != null) {
    // v5 layout: everything lives in rope_parameters; drop a stale alias.
    raw.rope_parameters = { ...hf, rope_theta: theta };
    if (raw.rope_scaling != null) raw.rope_scaling = { ...hf, rope_theta: theta };
    if (raw.rope_theta !== undefined) raw.rope_theta = theta;
  } else {
    raw.rope_theta = theta;
    raw.rope_scaling = scaling === null ? null : hf;
  }
}

/**
 * Writes `config.json` into `dir`: `config.raw` with every normalised field the caller changed
 * written back under its HF name (v4/v5 rope layout kept as found), so fields we do not model
 * survive. The result is re-validated before it is written, atomically.
 *
 * eosTokenIds: ids appended from generation_config.json are not copied into config.json — the
 * list counts as unchanged while it still starts with config.json's own ids (copy
 * generation_config.json alongside to keep them).
 */
export async function writeModelConfig(dir: string, config: ModelConfig): Promise<void> {
  const file = join(dir, 'config.json');
  const raw: Record<string, unknown> = structuredClone(config.raw);
  const before = normaliseModelConfig(config.raw, file);
  const changed = <K extends keyof ModelConfig>(key: K) => !sameValue(before[key], config[key]);

  if (changed('architecture')) {
    raw.model_type = config.architecture;
    raw.architectures = [CAUSAL_LM_CLASS[config.architecture]];
  }
  const simple: Array<[keyof ModelConfig, string]> = [
    ['vocabSize', 'vocab_size'], ['hiddenSize', 'hidden_size'], ['intermediateSize', 'intermediate_size'],
    ['numLayers', 'num_hidden_layers'], ['numHeads', 'num_attention_heads'], ['numKvHeads', 'num_key_value_heads'],
    ['headDim', 'head_dim'], ['rmsNormEps', 'rms_norm_eps'], ['maxPositionEmbeddings', 'max_position_embeddings'],
    ['tieWordEmbeddings', 'tie_word_embeddings'], ['qkvBias', 'attention_bias'], ['slidingWindow', 'sliding_window'],
    ['bosTokenId', 'bos_token_id'],
  ];
  for (const [key, hf] of simple) if (changed(key)) raw[hf] = config[key];
  if (changed('ropeTheta') || changed('ropeScaling')) setRope(raw, config.ropeTheta, config.ropeScaling);
  const ownEos = before.eosTokenIds;
  const eosKept = ownEos.length <= config.eosTokenIds.length && ownEos.every((id, i) => config.eosTokenIds[i] === id);
  if (!eosKept) raw.eos_token_id = config.eosTokenIds.length === 1 ? config.eosTokenIds[0] : [...config.eosTokenIds];
  if (changed('torchDtype')) {
    if (raw.dtype !== undefined) raw.dtype = config.torchDtype;
    if (raw.dtype === undefined || raw.torch_dtype !== undefined) raw.torch_dtype = config.torchDtype;
  }

  // What we write must read back as what we were given.
  const after = normaliseModelConfig(raw, file);
  for (const key of Object.keys(after) as Array<keyof ModelConfig>) {
    if (key === 'raw' || key === 'eosTokenIds') continue;
    if (!sameValue(after[key], config[key])) {
      throw new ModelFormatError(file, `field for ${key}`, `cannot be expressed in config.json: wanted ${describeValue(config[key])}, it would read back as ${describeValue(after[key])}`);
    }
  }

  const tmp = join(dir, `.config.json.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    await writeFile(tmp, `${JSON.stringify(raw, null, 2)}\n`, { flag: 'wx' });
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
}
