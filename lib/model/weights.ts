// The load plan: which byte range of which safetensors file holds each parameter a model config
// needs. TypeScript finds and validates everything here; the native engine then memory-maps the
// files and copies/converts exactly these ranges, trusting the plan.
//
// Checkpoints: `model.safetensors`, or shards listed by `model.safetensors.index.json`
// (`{"metadata": {...}, "weight_map": {tensor: shard file}}`). transformers prefers the single file
// when both exist; so do we.
import { stat } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { ModelFormatError, describeValue } from './format-error.js';
import type { ModelConfig } from './hf-config.js';
import { readJsonObject } from './json-file.js';
import { readSafetensorsHeader } from './safetensors.js';
import type { Dtype, SafetensorsHeader, TensorEntry } from './safetensors.js';

/** Weight dtypes the engine loads. F16 is widened to F32 by the native loader; BF16 stays BF16. */
export type WeightDtype = 'F32' | 'BF16' | 'F16';
const WEIGHT_DTYPES: readonly Dtype[] = ['F32', 'BF16', 'F16'];

export interface TensorSource {
  /** Absolute path of the safetensors file. */
  file: string;
  /** Absolute file offsets of the tensor's bytes, end exclusive. */
  begin: number;
  end: number;
  dtype: WeightDtype;
  shape: number[];
}

export interface WeightPlan {
  config: ModelConfig;
  /** Every parameter the architecture needs, keyed by canonical HF name (see canonicalWeights). */
  tensors: Map<string, TensorSource>;
  /**
   * Set when config.tieWordEmbeddings: the stored tensor the shared embedding/lm_head matrix is
   * read from — 'model.embed_tokens.weight', or 'lm_head.weight' when the checkpoint stores only
   * the head (transformers does that for shared tensors). `tensors` then has
   * model.embed_tokens.weight and no lm_head.weight: the engine uses the embedding for both.
   */
  tiedFrom?: string;
  /** Absolute paths of the safetensors files the plan reads, in first-use order. */
  files: string[];
  /** The distinct dtypes among the planned tensors. */
  dtypes: WeightDtype[];
  /** Facts a user may want to see: conversions at load, stored tensors ignored, file choices. */
  notes: string[];
}

export interface CanonicalWeight {
  name: string;
  shape: number[];
  /** The shape in config terms, for error messages ("[vocab_size, hidden_size]"). */
  formula: string;
}

/** The parameters (canonical HF names and shapes, [out, in] for projections) a config needs. */
export function canonicalWeights(config: ModelConfig): CanonicalWeight[] {
  const { vocabSize: V, hiddenSize: H, intermediateSize: I, numHeads, numKvHeads, headDim } = config;
  const q = numHeads * headDim;
  const kv = numKvHeads * headDim;
  const qf = 'num_attention_heads·head_dim';
  const kvf = 'num_key_value_heads·head_dim';
  const out: CanonicalWeight[] = [{ name: 'model.embed_tokens.weight', shape: [V, H], formula: '[vocab_size, hidden_size]' }];
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}`;
    out.push(
      { name: `${p}.input_layernorm.weight`, shape: [H], formula: '[hidden_size]' },
      { name: `${p}.self_attn.q_proj.weight`, shape: [q, H], formula: `[${qf}, hidden_size]` },
      { name: `${p}.self_attn.k_proj.weight`, shape: [kv, H], formula: `[${kvf}, hidden_size]` },
      { name: `${p}.self_attn.v_proj.weight`, shape: [kv, H], formula: `[${kvf}, hidden_size]` },
      { name: `${p}.self_attn.o_proj.weight`, shape: [H, q], formula: `[hidden_size, ${qf}]` },
    );
    if (config.qkvBias) {
      out.push(
        { name: `${p}.self_attn.q_proj.bias`, shape: [q], formula: `[${qf}]` },
        { name: `${p}.self_attn.k_proj.bias`, shape: [kv], formula: `[${kvf}]` },
        { name: `${p}.self_attn.v_proj.bias`, shape: [kv], formula: `[${kvf}]` },
      );
    }
    out.push(
      { name: `${p}.post_attention_layernorm.weight`, shape: [H], formula: '[hidden_size]' },
      { name: `${p}.mlp.gate_proj.weight`, shape: [I, H], formula: '[intermediate_size, hidden_size]' },
      { name: `${p}.mlp.up_proj.weight`, shape: [I, H], formula: '[intermediate_size, hidden_size]' },
      { name: `${p}.mlp.down_proj.weight`, shape: [H, I], formula: '[hidden_size, intermediate_size]' },
    );
  }
  out.push({ name: 'model.norm.weight', shape: [H], formula: '[hidden_size]' });
  if (!config.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [V, H], formula: '[vocab_size, hidden_size]' });
  return out;
}

interface Stored {
  header: SafetensorsHeader;
  entry: TensorEntry;
}

/** All tensors of a checkpoint by name, plus the aliases `__metadata__` records for shared tensors. */
interface Checkpoint {
  stored: Map<string, Stored>;
  aliases: Map<string, string>;
  /** What to name in "not found" messages. */
  searched: string[];
  notes: string[];
}

/** Whether something is at `path`; readers then insist it is a regular file, with a clear error. */
async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

const INDEX = 'model.safetensors.index.json';
const SINGLE = 'model.safetensors';

async function openCheckpoint(dir: string): Promise<Checkpoint> {
  const single = join(dir, SINGLE);
  const index = join(dir, INDEX);
  const notes: string[] = [];
  if (await exists(single)) {
    if (await exists(index)) notes.push(`both ${SINGLE} and ${INDEX} exist; using ${SINGLE}, as transformers does`);
    const header = await readSafetensorsHeader(single);
    const stored = new Map<string, Stored>();
    for (const [name, entry] of header.tensors) stored.set(name, { header, entry });
    return { stored, aliases: aliasesOf([header], stored), searched: [single], notes };
  }
  if (await exists(index)) return openSharded(dir, index, notes);
  let hint = '';
  if (await exists(join(dir, 'pytorch_model.bin')) || await exists(join(dir, 'pytorch_model.bin.index.json'))) {
    hint = '; found only PyTorch .bin weights, which are not supported (convert them to safetensors)';
  }
  throw new ModelFormatError(single, undefined, `not found, and no ${INDEX} either (expected the model's safetensors weights in ${dir})${hint}`);
}

async function openSharded(dir: string, index: string, notes: string[]): Promise<Checkpoint> {
  const json = await readJsonObject(index, 'a sharded checkpoint index');
  const map = json.weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) {
    throw new ModelFormatError(index, 'field "weight_map"', `expected an object mapping tensor names to shard files, found ${describeValue(map)}`);
  }
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(map as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard === '' || isAbsolute(shard) || shard.split(/[\\/]/).includes('..')) {
      throw new ModelFormatError(index, `weight_map "${name}"`, `expected a shard file name inside the model directory, found ${describeValue(shard)}`);
    }
    const names = byShard.get(shard) ?? [];
    names.push(name);
    byShard.set(shard, names);
  }
  if (byShard.size === 0) throw new ModelFormatError(index, 'field "weight_map"', 'is empty; expected at least one tensor');

  const headers: SafetensorsHeader[] = [];
  const stored = new Map<string, Stored>();
  for (const [shard, names] of byShard) {
    const path = join(dir, shard);
    if (!(await exists(path))) {
      throw new ModelFormatError(index, `weight_map "${names[0]}"`, `points to shard "${shard}", which does not exist in ${dir}`);
    }
    // Shards are read one after another: headers are small, and the machine may be shared.
    const header = await readSafetensorsHeader(path);
    headers.push(header);
    for (const name of names) {
      const entry = header.tensors.get(name);
      if (entry === undefined) throw new ModelFormatError(index, `weight_map "${name}"`, `points to shard "${shard}", which has no such tensor`);
      stored.set(name, { header, entry });
    }
  }
  // transformers loads shards whole, so tensors a shard holds but the index omits still load.
  for (const header of headers) {
    for (const [name, entry] of header.tensors) {
      const known = stored.get(name);
      if (known === undefined) stored.set(name, { header, entry });
      else if (known.header !== header && (map as Record<string, unknown>)[name] === undefined) {
        throw new ModelFormatError(header.path, `tensor "${name}"`, `is also stored in ${known.header.path} and the index names neither; expected one copy`);
      }
    }
  }
  return { stored, aliases: aliasesOf(headers, stored), searched: [index, ...headers.map((h) => h.path)], notes };
}

/**
 * transformers (safetensors' `_remove_duplicate_names`) stores one tensor of a shared pair and
 * records `"<dropped name>": "<kept name>"` in `__metadata__`; honour those entries.
 */
function aliasesOf(headers: SafetensorsHeader[], stored: Map<string, Stored>): Map<string, string> {
  const aliases = new Map<string, string>();
  for (const h of headers) {
    for (const [k, v] of Object.entries(h.metadata)) if (!stored.has(k) && stored.has(v)) aliases.set(k, v);
  }
  return aliases;
}

function lookup(ck: Checkpoint, name: string): { stored: Stored; from: string } | undefined {
  const direct = ck.stored.get(name);
  if (direct !== undefined) return { stored: direct, from: name };
  const target = ck.aliases.get(name);
  const viaAlias = target === undefined ? undefined : ck.stored.get(target);
  return viaAlias === undefined || target === undefined ? undefined : { stored: viaAlias, from: target };
}

const LAYER_TENSOR = /^model\.layers\.(\d+)\.(.+)$/;

/**
 * Finds the weights in a Hugging Face model directory and maps every parameter `config` needs to
 * its byte range, checking dtypes and shapes against the config. Throws ModelFormatError naming
 * the file, the tensor, what was expected and what was found.
 */
export async function planWeights(dir: string, config: ModelConfig): Promise<WeightPlan> {
  const ck = await openCheckpoint(dir);
  const notes = [...ck.notes];
  const needed = canonicalWeights(config);
  const neededNames = new Set(needed.map((w) => w.name));

  // Per-layer tensors we do not know mean a variant the engine would silently run wrong.
  for (const [name, { header }] of ck.stored) {
    const m = LAYER_TENSOR.exec(name);
    if (m === null || neededNames.has(name) || name.endsWith('rotary_emb.inv_freq')) continue;
    const layer = Number(m[1]);
    let why: string;
    if (layer >= config.numLayers) why = `layer ${layer} exists but config.json has num_hidden_layers ${config.numLayers}`;
    else if (/\.self_attn\.[qkvo]_proj\.bias$/.test(name)) why = `is an attention bias, which the ${config.architecture} config does not have (expected none)`;
    else why = `is not a ${config.architecture} parameter the engine knows (unsupported model variant)`;
    throw new ModelFormatError(header.path, `tensor "${name}"`, why);
  }

  const tensors = new Map<string, TensorSource>();
  const files: string[] = [];
  const dtypes = new Set<WeightDtype>();
  let tiedFrom: string | undefined;
  for (const w of needed) {
    let found = lookup(ck, w.name);
    if (w.name === 'model.embed_tokens.weight' && config.tieWordEmbeddings) {
      found ??= lookup(ck, 'lm_head.weight');
      if (found !== undefined && found.from !== w.name) {
        notes.push(`tied embeddings: the checkpoint stores only ${found.from}; it serves as the embedding too`);
      } else if (ck.stored.has('lm_head.weight')) {
        notes.push('tied embeddings: the stored lm_head.weight is ignored (transformers ties it to the embedding)');
      }
      tiedFrom = found?.from;
    }
    if (found === undefined) {
      const searched = ck.searched.join(', ');
      if (w.name === 'lm_head.weight') {
        throw new ModelFormatError(searched, 'tensor "lm_head.weight"', 'not found, and config.json has tie_word_embeddings false; expected a separate lm_head (or set tie_word_embeddings true if the head shares the embedding)');
      }
      throw new ModelFormatError(searched, `tensor "${w.name}"`, `not found (expected shape ${w.formula} = ${describeValue(w.shape)})`);
    }
    const { header, entry } = found.stored;
    const where = `tensor "${found.from}"${found.from === w.name ? '' : ` (for ${w.name})`}`;
    if (!WEIGHT_DTYPES.includes(entry.dtype)) {
      throw new ModelFormatError(header.path, where, `dtype ${entry.dtype} is not supported; expected F32, BF16 or F16`);
    }
    if (!sameShape(entry.shape, w.shape)) {
      throw new ModelFormatError(header.path, where, `shape ${describeValue(entry.shape)} does not match config.json: expected ${w.formula} = ${describeValue(w.shape)}`);
    }
    const dtype = entry.dtype as WeightDtype;
    const file = resolve(header.path);
    tensors.set(w.name, { file, begin: entry.begin, end: entry.end, dtype, shape: [...entry.shape] });
    if (!files.includes(file)) files.push(file);
    dtypes.add(dtype);
  }
  const f16 = [...tensors.values()].filter((t) => t.dtype === 'F16').length;
  if (f16 > 0) notes.push(`${f16} F16 tensor${f16 === 1 ? '' : 's'} will be converted to F32 at load`);

  const plan: WeightPlan = { config, tensors, files, dtypes: [...dtypes], notes };
  if (tiedFrom !== undefined) plan.tiedFrom = tiedFrom;
  return plan;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
