// Hugging Face model-directory loader: safetensors reader/writer, config.json normalisation, RoPE
// frequencies, the weight load plan, and a systematic corruption sweep (every mutation of a valid
// model directory must be refused with a ModelFormatError naming the file and the field/tensor,
// quickly). Models are built here with our own writer; names and shapes are spelled out by hand so
// they check the loader rather than repeat it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync } from 'node:fs';
import { appendFile, cp, mkdir, mkdtemp, readFile, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ModelFormatError } from '../lib/model/format-error.js';
import { readModelConfig, writeModelConfig } from '../lib/model/hf-config.js';
import { jsonErrorOffset } from '../lib/model/json-file.js';
import type { ModelConfig } from '../lib/model/hf-config.js';
import { ropeInvFreq } from '../lib/model/rope.js';
import { readSafetensorsHeader, readTensor, writeSafetensors } from '../lib/model/safetensors.js';
import type { TensorToWrite } from '../lib/model/safetensors.js';
import { planWeights } from '../lib/model/weights.js';

let root = '';
let caseNo = 0;
/** A fresh directory under the suite's temp root. */
async function freshDir(label: string): Promise<string> {
  const dir = join(root, `${String(caseNo++).padStart(3, '0')}-${label.replace(/[^a-z0-9]+/gi, '-')}`);
  await mkdir(dir, { recursive: true });
  return dir;
}

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), 'sealkit-loader-'));
});
test.after(async () => {
  await rm(root, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// Tiny model builder

interface Tiny {
  arch: 'llama' | 'qwen2' | 'mistral';
  vocab: number; hidden: number; inter: number; layers: number;
  heads: number; kv: number; headDim: number;
  tie: boolean; bias: boolean; dtype: 'F32' | 'BF16' | 'F16';
}
const TINY: Tiny = { arch: 'llama', vocab: 16, hidden: 8, inter: 12, layers: 2, heads: 2, kv: 1, headDim: 4, tie: false, bias: false, dtype: 'F32' };

function tinyConfigJson(t: Tiny, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const cls = { llama: 'LlamaForCausalLM', qwen2: 'Qwen2ForCausalLM', mistral: 'MistralForCausalLM' }[t.arch];
  return {
    architectures: [cls], model_type: t.arch, vocab_size: t.vocab, hidden_size: t.hidden, intermediate_size: t.inter,
    num_hidden_layers: t.layers, num_attention_heads: t.heads, num_key_value_heads: t.kv, hidden_act: 'silu',
    rms_norm_eps: 1e-5, rope_theta: 10000.0, max_position_embeddings: 64, tie_word_embeddings: t.tie,
    torch_dtype: 'float32', bos_token_id: 1, eos_token_id: 2, transformers_version: '4.45.0', ...extra,
  };
}

function values(n: number, seed: number, dtype: Tiny['dtype']): ArrayBufferView {
  if (dtype === 'F32') {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = (((i * 7 + seed * 13) % 23) - 11) / 16;
    return a;
  }
  const a = new Uint16Array(n); // arbitrary bit patterns stand in for 16-bit floats
  for (let i = 0; i < n; i++) a[i] = (i * 2654435761 + seed) & 0x3bff;
  return a;
}

/** Hand-written parameter list of the tiny model, HF names and [out, in] shapes. */
function tinyTensors(t: Tiny): Record<string, TensorToWrite> {
  const shapes: Record<string, number[]> = { 'model.embed_tokens.weight': [t.vocab, t.hidden], 'model.norm.weight': [t.hidden] };
  if (!t.tie) shapes['lm_head.weight'] = [t.vocab, t.hidden];
  for (let i = 0; i < t.layers; i++) {
    const p = `model.layers.${i}`;
    shapes[`${p}.input_layernorm.weight`] = [t.hidden];
    shapes[`${p}.post_attention_layernorm.weight`] = [t.hidden];
    shapes[`${p}.self_attn.q_proj.weight`] = [t.heads * t.headDim, t.hidden];
    shapes[`${p}.self_attn.k_proj.weight`] = [t.kv * t.headDim, t.hidden];
    shapes[`${p}.self_attn.v_proj.weight`] = [t.kv * t.headDim, t.hidden];
    shapes[`${p}.self_attn.o_proj.weight`] = [t.hidden, t.heads * t.headDim];
    if (t.bias) {
      shapes[`${p}.self_attn.q_proj.bias`] = [t.heads * t.headDim];
      shapes[`${p}.self_attn.k_proj.bias`] = [t.kv * t.headDim];
      shapes[`${p}.self_attn.v_proj.bias`] = [t.kv * t.headDim];
    }
    shapes[`${p}.mlp.gate_proj.weight`] = [t.inter, t.hidden];
    shapes[`${p}.mlp.up_proj.weight`] = [t.inter, t.hidden];
    shapes[`${p}.mlp.down_proj.weight`] = [t.hidden, t.inter];
  }
  const out: Record<string, TensorToWrite> = {};
  let seed = 0;
  for (const [name, shape] of Object.entries(shapes)) {
    out[name] = { dtype: t.dtype, shape, data: values(shape.reduce((a, b) => a * b, 1), seed++, t.dtype) };
  }
  return out;
}

const expectedCount = (t: Tiny) => 2 + (t.tie ? 0 : 1) + t.layers * (9 + (t.bias ? 3 : 0));

async function writeJson(path: string, value: unknown): Promise<void> {
  await writeFile(path, `${JSON.stringify(value, null, 2)}\n`);
}

/** Writes a tiny model directory: config.json and one safetensors file or `shards` shards + index. */
async function writeTinyModel(
  dir: string,
  t: Tiny,
  opts: { extraConfig?: Record<string, unknown>; tensors?: Record<string, TensorToWrite>; shards?: number; metadata?: Record<string, string> } = {},
): Promise<void> {
  await writeJson(join(dir, 'config.json'), tinyConfigJson(t, opts.extraConfig));
  const tensors = opts.tensors ?? tinyTensors(t);
  const shards = opts.shards ?? 1;
  if (shards === 1) {
    await writeSafetensors(join(dir, 'model.safetensors'), tensors, opts.metadata ?? { format: 'pt' });
    return;
  }
  const names = Object.keys(tensors);
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < shards; s++) {
    const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    const part: Record<string, TensorToWrite> = {};
    names.forEach((n, i) => {
      if (i % shards === s) {
        part[n] = tensors[n]!;
        weightMap[n] = file;
      }
    });
    await writeSafetensors(join(dir, file), part, { format: 'pt' });
  }
  await writeJson(join(dir, 'model.safetensors.index.json'), { metadata: { total_size: 0 }, weight_map: weightMap });
}

async function loadDir(dir: string) {
  const config = await readModelConfig(dir);
  return planWeights(dir, config);
}

const bytesOf = (v: ArrayBufferView) => Buffer.from(v.buffer, v.byteOffset, v.byteLength);

// ---------------------------------------------------------------------------------------------
// safetensors

test('safetensors: write → header → readTensor round trip, metadata, spec layout', async () => {
  const dir = await freshDir('roundtrip');
  const file = join(dir, 'mixed.safetensors');
  const tensors: Record<string, TensorToWrite> = {
    'b.f32': { dtype: 'F32', shape: [2, 3], data: new Float32Array([1, -2, 3.5, 0, 1e-7, -0]) },
    'a.bf16': { dtype: 'BF16', shape: [3], data: new Uint16Array([0x3f80, 0xc000, 0x7f80]) },
    'c.f16': { dtype: 'F16', shape: [1, 1, 1], data: new Uint16Array([0x3c00]) },
    'd.i64': { dtype: 'I64', shape: [2], data: new BigInt64Array([-1n, 1n << 40n]) },
    'e.u8': { dtype: 'U8', shape: [5], data: new Uint8Array([1, 2, 3, 4, 5]) },
    'f.scalar': { dtype: 'F64', shape: [], data: new Float64Array([Math.PI]) },
    'g.empty': { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
    'h.i32': { dtype: 'I32', shape: [2], data: new Int32Array([-7, 7]) },
  };
  const metadata = { format: 'pt', note: 'ünïcode ✓' };
  await writeSafetensors(file, tensors, metadata);
  assert.equal(await readdir(dir), ['mixed.safetensors'], 'no temporary file left behind');

  const header = await readSafetensorsHeader(file);
  assert.equal(header.metadata, metadata);
  assert.equal([...header.tensors.keys()].sort(), Object.keys(tensors).sort());
  for (const [name, t] of Object.entries(tensors)) {
    const entry = header.tensors.get(name)!;
    assert.is(entry.dtype, t.dtype, name);
    assert.equal(entry.shape, t.shape, name);
    const got = await readTensor(header, name);
    assert.is(got.constructor, t.data.constructor, `${name} comes back as ${t.data.constructor.name}`);
    assert.ok(bytesOf(got).equals(bytesOf(t.data)), `${name} bytes`);
  }

  // Layout per the spec: u64 LE length, JSON padded with spaces to 8 bytes, dense buffer.
  const bytes = await readFile(file);
  const n = Number(bytes.readBigUInt64LE(0));
  assert.is(n % 8, 0, 'header length is a multiple of 8');
  assert.is(header.dataStart, 8 + n);
  const text = bytes.subarray(8, 8 + n).toString('utf8');
  assert.is(text[0], '{');
  const json = text.trimEnd();
  assert.ok(/^ *$/.test(text.slice(json.length)), 'padding is spaces');
  assert.ok(text.length - json.length < 8, 'minimal padding');
  const parsed = JSON.parse(json) as Record<string, { dtype: string; data_offsets: [number, number] }>;
  assert.equal(Object.keys(parsed)[0], '__metadata__');
  const order = Object.keys(parsed).slice(1);
  // Reference order: larger dtypes first, then by name; offsets ascend in that order and tile the buffer.
  assert.equal(order, ['d.i64', 'f.scalar', 'b.f32', 'g.empty', 'h.i32', 'a.bf16', 'c.f16', 'e.u8']);
  let cursor = 0;
  for (const name of order) {
    const [b, e] = parsed[name]!.data_offsets;
    assert.is(b, cursor, `${name} starts where the previous ended`);
    cursor = e;
  }
  assert.is(bytes.length, 8 + n + cursor, 'file is header + dense buffer');
  for (const [name, entry] of header.tensors) {
    const size = { F64: 8, I64: 8, F32: 4, I32: 4, BF16: 2, F16: 2, U8: 1 }[entry.dtype as string]!;
    assert.is((entry.begin - header.dataStart) % size, 0, `${name} naturally aligned`);
  }
});

test('safetensors: writer refuses data that does not match the shape, naming the tensor', async () => {
  const dir = await freshDir('writer-bad');
  const file = join(dir, 'bad.safetensors');
  try {
    await writeSafetensors(file, { 'x.weight': { dtype: 'F32', shape: [3], data: new Float32Array(2) } });
    assert.unreachable('should have thrown');
  } catch (err) {
    assert.instance(err, ModelFormatError);
    assert.match((err as Error).message, /bad\.safetensors: tensor "x\.weight": data has 8 bytes but shape \[3\] of F32 needs 12/);
  }
  assert.equal(await readdir(dir), []);
});

test('safetensors: the example message for a size mismatch', async () => {
  const dir = await freshDir('example-message');
  const file = join(dir, 'model.safetensors');
  const json = Buffer.from(JSON.stringify({ 'model.norm.weight': { dtype: 'F32', shape: [64], data_offsets: [0, 100] } }));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  await writeFile(file, Buffer.concat([prefix, json, Buffer.alloc(100)]));
  try {
    await readSafetensorsHeader(file);
    assert.unreachable('should have thrown');
  } catch (err) {
    assert.match((err as Error).message, 'model.safetensors: tensor "model.norm.weight": data_offsets [0, 100] span 100 bytes but shape [64] of F32 needs 256');
  }
});

// ---------------------------------------------------------------------------------------------
// config.json

async function configFrom(json: Record<string, unknown>, generation?: Record<string, unknown>): Promise<ModelConfig> {
  const dir = await freshDir('config');
  await writeJson(join(dir, 'config.json'), json);
  if (generation) await writeJson(join(dir, 'generation_config.json'), generation);
  return readModelConfig(dir);
}

// Llama-3.2-1B's config.json, as published (transformers 4.45).
const LLAMA_32_1B = {
  architectures: ['LlamaForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009], head_dim: 64, hidden_act: 'silu', hidden_size: 2048, initializer_range: 0.02,
  intermediate_size: 8192, max_position_embeddings: 131072, mlp_bias: false, model_type: 'llama',
  num_attention_heads: 32, num_hidden_layers: 16, num_key_value_heads: 8, pretraining_tp: 1, rms_norm_eps: 1e-5,
  rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rope_theta: 500000.0, tie_word_embeddings: true, torch_dtype: 'bfloat16', transformers_version: '4.45.0.dev0', use_cache: true, vocab_size: 128256,
};

test('config: llama 3.2 (v4 rope_scaling with rope_type), eos list, explicit head_dim', async () => {
  const c = await configFrom(LLAMA_32_1B);
  assert.equal({ ...c, raw: undefined }, {
    architecture: 'llama', vocabSize: 128256, hiddenSize: 2048, intermediateSize: 8192, numLayers: 16,
    numHeads: 32, numKvHeads: 8, headDim: 64, rmsNormEps: 1e-5, ropeTheta: 500000,
    ropeScaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
    maxPositionEmbeddings: 131072, tieWordEmbeddings: true, qkvBias: false, slidingWindow: null,
    bosTokenId: 128000, eosTokenIds: [128001, 128008, 128009], torchDtype: 'bfloat16', raw: undefined,
  });
  assert.equal(c.raw, LLAMA_32_1B);
});

test('config: llama3 rope_scaling with the older "type" key; llama defaults', async () => {
  const { rope_type: _ignored, ...scaling } = LLAMA_32_1B.rope_scaling;
  const c = await configFrom({ ...LLAMA_32_1B, rope_scaling: { ...scaling, type: 'llama3' } });
  assert.equal(c.ropeScaling, { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
  // Minimal llama: transformers' LlamaConfig defaults fill the rest.
  const m = await configFrom({ model_type: 'llama', vocab_size: 32, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 4 });
  assert.is(m.numKvHeads, 4, 'num_key_value_heads defaults to heads');
  assert.is(m.headDim, 4, 'head_dim defaults to hidden / heads');
  assert.is(m.rmsNormEps, 1e-6);
  assert.is(m.ropeTheta, 10000);
  assert.is(m.ropeScaling, null);
  assert.is(m.maxPositionEmbeddings, 2048);
  assert.is(m.tieWordEmbeddings, false);
  assert.is(m.bosTokenId, 1);
  assert.equal(m.eosTokenIds, [2]);
  assert.is(m.torchDtype, null);
  // linear scaling and rope_type "default"
  const lin = await configFrom({ ...LLAMA_32_1B, rope_scaling: { type: 'linear', factor: 2 } });
  assert.equal(lin.ropeScaling, { type: 'linear', factor: 2 });
  const def = await configFrom({ ...LLAMA_32_1B, rope_scaling: { rope_type: 'default' } });
  assert.is(def.ropeScaling, null);
});

test('config: qwen2 always has q/k/v bias; its defaults', async () => {
  // Qwen2.5-0.5B's config.json, as published.
  const qwen = {
    architectures: ['Qwen2ForCausalLM'], attention_dropout: 0.0, bos_token_id: 151643, eos_token_id: 151643, hidden_act: 'silu',
    hidden_size: 896, initializer_range: 0.02, intermediate_size: 4864, max_position_embeddings: 32768, max_window_layers: 24,
    model_type: 'qwen2', num_attention_heads: 14, num_hidden_layers: 24, num_key_value_heads: 2, rms_norm_eps: 1e-6,
    rope_theta: 1000000.0, sliding_window: 32768, tie_word_embeddings: true, torch_dtype: 'bfloat16',
    transformers_version: '4.40.1', use_cache: true, use_sliding_window: false, vocab_size: 151936,
  };
  const c = await configFrom(qwen, { bos_token_id: 151643, eos_token_id: [151645, 151643] });
  assert.is(c.architecture, 'qwen2');
  assert.is(c.qkvBias, true);
  assert.is(c.headDim, 64);
  assert.is(c.numKvHeads, 2);
  assert.is(c.ropeTheta, 1e6);
  assert.is(c.slidingWindow, null, 'use_sliding_window false makes sliding_window inert');
  assert.equal(c.eosTokenIds, [151643, 151645], 'generation_config eos ids are merged after config eos');
  const m = await configFrom({ model_type: 'qwen2', vocab_size: 32, hidden_size: 64, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 32 });
  assert.is(m.numKvHeads, 32, 'Qwen2Config defaults num_key_value_heads to 32');
  assert.is(m.maxPositionEmbeddings, 32768);
  assert.is(m.bosTokenId, null);
  assert.equal(m.eosTokenIds, []);
  assert.is(m.qkvBias, true);
});

test('config: mistral with v5 rope_parameters and dtype', async () => {
  const c = await configFrom({
    architectures: ['MistralForCausalLM'], model_type: 'mistral', vocab_size: 32768, hidden_size: 4096, intermediate_size: 14336,
    num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, head_dim: 128, max_position_embeddings: 32768,
    rms_norm_eps: 1e-5, rope_parameters: { rope_type: 'default', rope_theta: 1000000.0 }, sliding_window: null,
    tie_word_embeddings: false, dtype: 'bfloat16', bos_token_id: 1, eos_token_id: 2, transformers_version: '5.0.0',
  });
  assert.is(c.architecture, 'mistral');
  assert.is(c.ropeTheta, 1e6);
  assert.is(c.ropeScaling, null);
  assert.is(c.headDim, 128);
  assert.is(c.torchDtype, 'bfloat16');
  assert.is(c.slidingWindow, null);
  assert.is(c.qkvBias, false);
  const v5llama3 = await configFrom({ ...LLAMA_32_1B, rope_scaling: undefined, rope_theta: undefined, rope_parameters: { ...LLAMA_32_1B.rope_scaling, rope_theta: 500000.0 } });
  assert.equal(v5llama3.ropeScaling, { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
  assert.is(v5llama3.ropeTheta, 500000);
  const m = await configFrom({ model_type: 'mistral', vocab_size: 32, hidden_size: 64, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 8 });
  assert.is(m.numKvHeads, 8, 'MistralConfig defaults num_key_value_heads to 8');
  assert.is(m.slidingWindow, 4096, 'MistralConfig defaults sliding_window to 4096');
  assert.is(m.maxPositionEmbeddings, 131072);
});

test('config: writeModelConfig writes changed fields back and keeps the rest', async () => {
  const src = await configFrom({ ...LLAMA_32_1B, custom_field: { keep: [1, 2] } });
  const dir = await freshDir('write-config');
  await writeModelConfig(dir, { ...src, numLayers: 4, ropeTheta: 10000, ropeScaling: { type: 'linear', factor: 4 }, eosTokenIds: [7] });
  const back = await readModelConfig(dir);
  assert.is(back.numLayers, 4);
  assert.is(back.ropeTheta, 10000);
  assert.equal(back.ropeScaling, { type: 'linear', factor: 4 });
  assert.equal(back.eosTokenIds, [7]);
  assert.equal(back.raw.custom_field, { keep: [1, 2] });
  assert.is(back.raw.hidden_size, 2048);
  assert.is(back.raw.rope_parameters, undefined, 'v4 layout stays v4');
  // v5 layout stays v5; unchanged config round-trips byte-identically in meaning.
  const v5 = await configFrom({ ...LLAMA_32_1B, rope_scaling: undefined, rope_theta: undefined, rope_parameters: { ...LLAMA_32_1B.rope_scaling, rope_theta: 500000.0 } });
  const dir5 = await freshDir('write-config-v5');
  await writeModelConfig(dir5, { ...v5, ropeTheta: 250000 });
  const back5 = await readModelConfig(dir5);
  assert.is(back5.ropeTheta, 250000);
  assert.is((back5.raw.rope_parameters as Record<string, unknown>).rope_type, 'llama3');
  assert.is(back5.raw.rope_theta, undefined);
  // A change config.json cannot express is refused, not silently dropped.
  try {
    await writeModelConfig(dir5, { ...v5, qkvBias: true });
    assert.unreachable('should have thrown');
  } catch (err) {
    assert.instance(err, ModelFormatError);
    assert.match((err as Error).message, /config\.json/);
  }
});

test('json: the syntax-error locator agrees with JSON.parse on mutated documents', () => {
  const docs = [JSON.stringify(LLAMA_32_1B, null, 2), '{"a": [1, -2.5e+3, true, null, "x\\u00e9\\n"], "b": {}}', '[]', '"s"', '0'];
  const alphabet = ['{', '}', '[', ']', ',', ':', '"', '\\', 'e', '-', '.', '0', '1', 't', 'n', ' ', '\n', 'x', '\u0001'];
  let state = 12345;
  const rand = (k: number) => { state = (state * 1103515245 + 12345) % 2147483648; return state % k; };
  for (const doc of docs) {
    assert.is(jsonErrorOffset(doc), -1, doc);
    for (let trial = 0; trial < 300; trial++) {
      const at = rand(doc.length + 1);
      const kind = rand(3);
      const ch = alphabet[rand(alphabet.length)]!;
      const mutated = kind === 0 ? doc.slice(0, at) + doc.slice(at + 1) : kind === 1 ? doc.slice(0, at) + ch + doc.slice(at) : doc.slice(0, at) + ch + doc.slice(at + 1);
      let parses = true;
      try { JSON.parse(mutated); } catch { parses = false; }
      const offset = jsonErrorOffset(mutated);
      assert.is(offset === -1, parses, `${JSON.stringify(mutated)}: offset ${offset}`);
      if (!parses) assert.ok(offset >= 0 && offset <= mutated.length);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// RoPE

test('rope: llama3 scaling hits all three branches (values computed independently in float64)', () => {
  // d = 16, θ = 10000 → inv_freq = 10000^(-i/8); wavelengths 6.3, 19.9, 62.8, 198.7, 628.3, 1986.9,
  // 6283, 19869. With orig 2048, low 1, high 4: wavelen < 512 kept (i 0-3), > 2048 divided by 8
  // (i 6-7), between blended (i 4-5).
  const scaling = { type: 'llama3' as const, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 2048 };
  const got = ropeInvFreq({ headDim: 16, ropeTheta: 10000, ropeScaling: scaling });
  const expected = [1.0, 0.3162277638912201, 0.10000000149011612, 0.03162277489900589, 0.007840188220143318,
    0.000423639256041497, 0.0001250000059371814, 3.952846964239143e-5];
  assert.equal(Array.from(got), expected);
  // The blended band by hand for i = 4: f = 0.01, wavelen = 200π, smooth = (2048/(200π) − 1)/3.
  const smooth = (2048 / (200 * Math.PI) - 1) / 3;
  assert.is(got[4], Math.fround((1 - smooth) * 0.01 / 8 + smooth * 0.01));
  const plain = ropeInvFreq({ headDim: 16, ropeTheta: 10000, ropeScaling: null });
  for (let i = 0; i < 8; i++) assert.is(plain[i], Math.fround(1 / 10000 ** (i / 8)));
  const linear = ropeInvFreq({ headDim: 16, ropeTheta: 10000, ropeScaling: { type: 'linear', factor: 4 } });
  for (let i = 0; i < 8; i++) assert.is(linear[i], Math.fround(1 / 10000 ** (i / 8) / 4));
});

// ---------------------------------------------------------------------------------------------
// Weight plans

test('plan: single-file llama maps every parameter to its byte range', async () => {
  const dir = await freshDir('plan-llama');
  const tensors = tinyTensors(TINY);
  await writeTinyModel(dir, TINY, { tensors });
  const plan = await loadDir(dir);
  assert.is(plan.tensors.size, expectedCount(TINY));
  assert.is(plan.tiedFrom, undefined);
  assert.equal(plan.dtypes, ['F32']);
  assert.is(plan.files.length, 1);
  assert.ok(plan.files[0]!.endsWith('model.safetensors'));
  // Each planned range holds exactly the bytes we wrote under that name.
  const bytes = await readFile(join(dir, 'model.safetensors'));
  for (const [name, t] of Object.entries(tensors)) {
    const src = plan.tensors.get(name)!;
    assert.ok(src, name);
    assert.equal(src.shape, t.shape);
    assert.ok(bytes.subarray(src.begin, src.end).equals(bytesOf(t.data)), `${name} range`);
  }
});

test('plan: sharded qwen2 checkpoint with index, q/k/v biases', async () => {
  const t: Tiny = { ...TINY, arch: 'qwen2', bias: true };
  const dir = await freshDir('plan-sharded');
  const tensors = tinyTensors(t);
  await writeTinyModel(dir, t, { tensors, shards: 3 });
  const plan = await loadDir(dir);
  assert.is(plan.config.qkvBias, true);
  assert.is(plan.tensors.size, expectedCount(t));
  assert.is(plan.files.length, 3);
  assert.ok(plan.tensors.has('model.layers.1.self_attn.k_proj.bias'));
  for (const [name, tw] of Object.entries(tensors)) {
    const src = plan.tensors.get(name)!;
    const bytes = await readFile(src.file);
    assert.ok(bytes.subarray(src.begin, src.end).equals(bytesOf(tw.data)), `${name} range in ${src.file}`);
  }
});

test('plan: tied embeddings stored only as lm_head.weight (with and without the metadata alias)', async () => {
  const t: Tiny = { ...TINY, tie: true };
  const all = tinyTensors({ ...t, tie: false });
  const { 'model.embed_tokens.weight': _embed, ...onlyHead } = all;
  const metadatas: Record<string, string>[] = [{ format: 'pt', 'model.embed_tokens.weight': 'lm_head.weight' }, { format: 'pt' }];
  for (const metadata of metadatas) {
    const dir = await freshDir('plan-tied');
    await writeTinyModel(dir, t, { tensors: onlyHead, metadata });
    const plan = await loadDir(dir);
    assert.is(plan.tiedFrom, 'lm_head.weight');
    assert.not.ok(plan.tensors.has('lm_head.weight'));
    const embed = plan.tensors.get('model.embed_tokens.weight')!;
    const bytes = await readFile(embed.file);
    assert.ok(bytes.subarray(embed.begin, embed.end).equals(bytesOf(all['lm_head.weight']!.data)));
    assert.ok(plan.notes.some((n) => /stores only lm_head\.weight/.test(n)), plan.notes.join('; '));
  }
  // Tied and stored as the embedding: the usual case.
  const dir = await freshDir('plan-tied-embed');
  await writeTinyModel(dir, t);
  const plan = await loadDir(dir);
  assert.is(plan.tiedFrom, 'model.embed_tokens.weight');
  assert.is(plan.tensors.size, expectedCount(t));
});

test('plan: F16 and BF16 weights are reported (F16 noted for conversion)', async () => {
  for (const dtype of ['F16', 'BF16'] as const) {
    const t: Tiny = { ...TINY, dtype };
    const dir = await freshDir(`plan-${dtype}`);
    await writeTinyModel(dir, t);
    const plan = await loadDir(dir);
    assert.equal(plan.dtypes, [dtype]);
    for (const src of plan.tensors.values()) assert.is(src.dtype, dtype);
    assert.is(plan.notes.some((n) => /F16 tensors will be converted to F32/.test(n)), dtype === 'F16');
  }
});

test('plan: stray rotary_emb.inv_freq is ignored', async () => {
  const dir = await freshDir('plan-inv-freq');
  const tensors = { ...tinyTensors(TINY), 'model.layers.0.self_attn.rotary_emb.inv_freq': { dtype: 'F32' as const, shape: [2], data: new Float32Array(2) } };
  await writeTinyModel(dir, TINY, { tensors });
  const plan = await loadDir(dir);
  assert.is(plan.tensors.size, expectedCount(TINY));
});

const TINYSTORIES = new URL('../../shared/models/tinystories-656k/', import.meta.url);
if (existsSync(TINYSTORIES)) {
  test('plan: tinystories-656k (real checkpoint storing only lm_head.weight)', async () => {
    const dir = fileURLToPath(TINYSTORIES);
    const plan = await loadDir(dir);
    assert.is(plan.config.architecture, 'llama');
    assert.is(plan.config.numKvHeads, 4);
    assert.is(plan.tiedFrom, 'lm_head.weight');
    assert.is(plan.tensors.size, 1 + 2 * 9 + 1);
    const embed = plan.tensors.get('model.embed_tokens.weight')!;
    assert.equal(embed.shape, [2048, 128]);
    const header = await readSafetensorsHeader(join(dir, 'model.safetensors'));
    assert.is(embed.begin, header.tensors.get('lm_head.weight')!.begin);
    assert.equal(plan.config.eosTokenIds, [2]);
  });
} else {
  console.log(`skip: ${fileURLToPath(TINYSTORIES)} is absent; the real-checkpoint plan test does not run`);
  test.skip('plan: tinystories-656k (real checkpoint storing only lm_head.weight)', () => {});
}

// ---------------------------------------------------------------------------------------------
// Systematic corruption: each mutation of a valid directory is refused, quickly and clearly.

type Mutation = {
  name: string;
  /** Regexes the error message must match: the file, then the field or tensor and the reason. */
  expect: RegExp[];
  base?: 'single' | 'sharded';
  mutate: (dir: string) => Promise<void>;
};

const ST = 'model.safetensors';

async function readParts(file: string): Promise<{ n: number; header: Record<string, unknown>; data: Buffer }> {
  const bytes = await readFile(file);
  const n = Number(bytes.readBigUInt64LE(0));
  return { n, header: JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, unknown>, data: bytes.subarray(8 + n) };
}

/** Rewrites a file's header JSON (as text) keeping its data section. */
async function rewriteHeaderText(file: string, edit: (text: string) => string, dataEdit?: (data: Buffer) => Buffer): Promise<void> {
  const { header, data } = await readParts(file);
  const json = Buffer.from(edit(JSON.stringify(header)), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  await writeFile(file, Buffer.concat([prefix, json, dataEdit ? dataEdit(data) : data]));
}

type Entry = { dtype: unknown; shape: unknown; data_offsets: [number, number] };
async function editEntry(file: string, name: string, edit: (e: Entry) => void, dataEdit?: (data: Buffer) => Buffer): Promise<void> {
  await rewriteHeaderText(file, (text) => {
    const h = JSON.parse(text) as Record<string, Entry>;
    edit(h[name]!);
    return JSON.stringify(h);
  }, dataEdit);
}

async function setLength(file: string, n: bigint): Promise<void> {
  const bytes = await readFile(file);
  bytes.writeBigUInt64LE(n, 0);
  await writeFile(file, bytes);
}

async function editConfig(dir: string, edit: (c: Record<string, unknown>) => void): Promise<void> {
  const file = join(dir, 'config.json');
  const c = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  edit(c);
  await writeJson(file, c);
}

/** Rebuilds model.safetensors with the writer after editing the tensor table. */
async function rebuild(dir: string, edit: (t: Record<string, TensorToWrite>) => void): Promise<void> {
  const t = tinyTensors(TINY);
  edit(t);
  await writeSafetensors(join(dir, ST), t, { format: 'pt' });
}

// Tensor order in the file: the writer sorts by name, so the first is lm_head.weight and the last model.norm.weight.
const FIRST = 'lm_head.weight';
const LAST = 'model.norm.weight';
const Q0 = 'model.layers.0.self_attn.q_proj.weight';

const mutations: Mutation[] = [
  // truncation
  ...[0, 4].map((len) => ({ name: `truncate to ${len} bytes`, expect: [/model\.safetensors: /, /shorter than the 8-byte/], mutate: (d: string) => truncate(join(d, ST), len) })),
  { name: 'truncate to 8 bytes', expect: [/model\.safetensors: header length: /, /only 0 bytes after/], mutate: (d) => truncate(join(d, ST), 8) },
  { name: 'truncate in the header', expect: [/model\.safetensors: header length: /, /truncated/], mutate: async (d) => { const { n } = await readParts(join(d, ST)); await truncate(join(d, ST), 8 + Math.floor(n / 2)); } },
  { name: 'truncate in the data', expect: [/model\.safetensors: tensor "/, /beyond the data section/], mutate: async (d) => { const { n, data } = await readParts(join(d, ST)); await truncate(join(d, ST), 8 + n + Math.floor(data.length / 2)); } },
  { name: 'truncate the last byte', expect: [new RegExp(`model\\.safetensors: tensor "${LAST}"`), /beyond the data section/], mutate: async (d) => { const { n, data } = await readParts(join(d, ST)); await truncate(join(d, ST), 8 + n + data.length - 1); } },
  // header length
  { name: 'header length huge', expect: [/model\.safetensors: header length: /, /at most 100000000/], mutate: (d) => setLength(join(d, ST), 1n << 62n) },
  { name: 'header length just over 100 MB', expect: [/model\.safetensors: header length: /, /at most/], mutate: (d) => setLength(join(d, ST), 100_000_001n) },
  { name: 'header length zero', expect: [/model\.safetensors: header length: is 0/], mutate: (d) => setLength(join(d, ST), 0n) },
  { name: 'header length one more (odd)', expect: [/model\.safetensors: /, /header|data section|tensor "/], mutate: async (d) => { const { n } = await readParts(join(d, ST)); await setLength(join(d, ST), BigInt(n + 1)); } },
  { name: 'header length one less (odd)', expect: [/model\.safetensors: /, /header|data section|tensor "/], mutate: async (d) => { const { n } = await readParts(join(d, ST)); await setLength(join(d, ST), BigInt(n - 1)); } },
  { name: 'header length beyond the file', expect: [/model\.safetensors: header length: /], mutate: async (d) => { const { n, data } = await readParts(join(d, ST)); await setLength(join(d, ST), BigInt(n + data.length + 1)); } },
  // header text
  { name: 'header is garbage', expect: [/model\.safetensors: header: expected a JSON object starting with '\{'/], mutate: (d) => rewriteHeaderText(join(d, ST), (t) => 'x'.repeat(t.length)) },
  { name: 'header is not UTF-8', expect: [/model\.safetensors: header: is not valid UTF-8/], mutate: async (d) => { const f = join(d, ST); const b = await readFile(f); b[9] = 0xff; b[10] = 0xfe; await writeFile(f, b); } },
  { name: 'header is broken JSON', expect: [/model\.safetensors: header: is not valid JSON at byte \d+ of the header/], mutate: (d) => rewriteHeaderText(join(d, ST), (t) => t.slice(0, -1)) },
  { name: 'header is a JSON array', expect: [/model\.safetensors: header: /], mutate: (d) => rewriteHeaderText(join(d, ST), () => '[1, 2]') },
  { name: 'duplicate tensor name', expect: [new RegExp(`model\\.safetensors: tensor "${LAST}": appears twice`)], mutate: (d) => rewriteHeaderText(join(d, ST), (t) => { const h = JSON.parse(t) as Record<string, unknown>; return `${t.slice(0, -1)},"${LAST}":${JSON.stringify(h[LAST])}}`; }) },
  { name: '__metadata__ not a string map', expect: [/model\.safetensors: field "__metadata__"\."format": expected a string, found 1/], mutate: (d) => rewriteHeaderText(join(d, ST), (t) => t.replace('"format":"pt"', '"format":1')) },
  { name: 'tensor entry not an object', expect: [new RegExp(`model\\.safetensors: tensor "${FIRST}": expected an object`)], mutate: (d) => rewriteHeaderText(join(d, ST), (t) => { const h = JSON.parse(t) as Record<string, unknown>; h[FIRST] = 5; return JSON.stringify(h); }) },
  // one tensor's fields
  { name: 'shape changed (byte size mismatch)', expect: [new RegExp(`model\\.safetensors: tensor "${LAST}": data_offsets \\[\\d+, \\d+\\] span 32 bytes but shape \\[9\\] of F32 needs 36`)], mutate: (d) => editEntry(join(d, ST), LAST, (e) => { e.shape = [9]; }) },
  { name: 'shape changed (same size, wrong for config)', expect: [new RegExp(`model\\.safetensors: tensor "${Q0.replace(/\./g, '\\.')}": shape \\[4,16\\] does not match config\\.json: expected \\[num_attention_heads·head_dim, hidden_size\\] = \\[8,8\\]`)], mutate: (d) => editEntry(join(d, ST), Q0, (e) => { e.shape = [4, 16]; }) },
  { name: 'negative dimension', expect: [/tensor "lm_head\.weight": field "shape": expected a list of non-negative integers, found \[-16,8\]/], mutate: (d) => editEntry(join(d, ST), FIRST, (e) => { e.shape = [-16, 8]; }) },
  { name: 'fractional dimension', expect: [/tensor "lm_head\.weight": field "shape"/], mutate: (d) => editEntry(join(d, ST), FIRST, (e) => { e.shape = [16.5, 8]; }) },
  { name: 'shape missing', expect: [/tensor "lm_head\.weight": field "shape" is missing/], mutate: (d) => editEntry(join(d, ST), FIRST, (e) => { delete (e as Partial<Entry>).shape; }) },
  { name: 'dtype unknown', expect: [/tensor "lm_head\.weight": field "dtype": expected one of .*F32.*, found "F17"/], mutate: (d) => editEntry(join(d, ST), FIRST, (e) => { e.dtype = 'F17'; }) },
  { name: 'dtype missing', expect: [/tensor "lm_head\.weight": field "dtype" is missing/], mutate: (d) => editEntry(join(d, ST), FIRST, (e) => { delete (e as Partial<Entry>).dtype; }) },
  { name: 'dtype changed to F16 (size mismatch)', expect: [/tensor "lm_head\.weight": data_offsets .* of F16 needs 256/], mutate: (d) => editEntry(join(d, ST), FIRST, (e) => { e.dtype = 'F16'; }) },
  { name: 'dtype changed to I32 (unsupported weight)', expect: [/model\.safetensors: tensor "lm_head\.weight": dtype I32 is not supported; expected F32, BF16 or F16/], mutate: (d) => editEntry(join(d, ST), FIRST, (e) => { e.dtype = 'I32'; }) },
  { name: 'data_offsets malformed', expect: [/tensor "lm_head\.weight": field "data_offsets": expected \[begin, end\]/], mutate: (d) => editEntry(join(d, ST), FIRST, (e) => { (e as { data_offsets: unknown }).data_offsets = ['0', 512]; }) },
  { name: 'data_offsets reversed', expect: [/tensor "lm_head\.weight": field "data_offsets": expected begin <= end/], mutate: (d) => editEntry(join(d, ST), FIRST, (e) => { e.data_offsets = [512, 0]; }) },
  { name: 'data_offsets overlap', expect: [/model\.safetensors: tensor "model\.embed_tokens\.weight": data_offsets \[508, 1020\] overlap the previous tensor "lm_head\.weight"/], mutate: (d) => editEntry(join(d, ST), 'model.embed_tokens.weight', (e) => { e.data_offsets = [e.data_offsets[0] - 4, e.data_offsets[1] - 4]; }) },
  { name: 'data_offsets leave a hole', expect: [new RegExp(`model\\.safetensors: tensor "${LAST}": .*leave a hole`)], mutate: (d) => editEntry(join(d, ST), LAST, (e) => { e.data_offsets = [e.data_offsets[0] + 4, e.data_offsets[1] + 4]; }, (data) => Buffer.concat([data, Buffer.alloc(4)])) },
  { name: 'data_offsets beyond EOF', expect: [new RegExp(`model\\.safetensors: tensor "${LAST}": data_offsets .* end beyond the data section`)], mutate: (d) => editEntry(join(d, ST), LAST, (e) => { e.data_offsets = [e.data_offsets[0] + 1000, e.data_offsets[1] + 1000]; }) },
  { name: 'trailing garbage after the data', expect: [/model\.safetensors: data section: /, /trailing garbage/], mutate: (d) => appendFile(join(d, ST), Buffer.alloc(3)) },
  // tensor table
  { name: 'tensor deleted', expect: [/model\.safetensors: tensor "model\.layers\.1\.mlp\.up_proj\.weight": not found/], mutate: (d) => rebuild(d, (t) => { delete t['model.layers.1.mlp.up_proj.weight']; }) },
  { name: 'lm_head deleted from an untied model', expect: [/model\.safetensors: tensor "lm_head\.weight": not found, and config\.json has tie_word_embeddings false/], mutate: (d) => rebuild(d, (t) => { delete t['lm_head.weight']; }) },
  { name: 'layer tensor renamed', expect: [/model\.safetensors: tensor "model\.layers\.0\.mlp\.upp_proj\.weight": is not a llama parameter/], mutate: (d) => rebuild(d, (t) => { t['model.layers.0.mlp.upp_proj.weight'] = t['model.layers.0.mlp.up_proj.weight']!; delete t['model.layers.0.mlp.up_proj.weight']; }) },
  { name: 'final norm renamed', expect: [/model\.safetensors: tensor "model\.norm\.weight": not found/], mutate: (d) => rebuild(d, (t) => { t['model.final_norm.weight'] = t['model.norm.weight']!; delete t['model.norm.weight']; }) },
  { name: 'extra layer beyond num_hidden_layers', expect: [/tensor "model\.layers\.2\.input_layernorm\.weight": layer 2 exists but config\.json has num_hidden_layers 2/], mutate: (d) => rebuild(d, (t) => { t['model.layers.2.input_layernorm.weight'] = t['model.layers.1.input_layernorm.weight']!; }) },
  { name: 'unexpected attention bias in llama', expect: [/tensor "model\.layers\.0\.self_attn\.q_proj\.bias": is an attention bias/], mutate: (d) => rebuild(d, (t) => { t['model.layers.0.self_attn.q_proj.bias'] = { dtype: 'F32', shape: [8], data: new Float32Array(8) }; }) },
  { name: 'no weights at all', expect: [/model\.safetensors: not found, and no model\.safetensors\.index\.json/], mutate: (d) => rm(join(d, ST)) },
  { name: 'model.safetensors is a directory', expect: [/model\.safetensors: expected a regular file/], mutate: async (d) => { await rm(join(d, ST)); await mkdir(join(d, ST)); } },
  // config.json
  { name: 'config.json invalid JSON', expect: [/config\.json: invalid JSON at line 2, column 18 /], mutate: (d) => writeFile(join(d, 'config.json'), '{"model_type": "llama",\n  "hidden_size": }') },
  { name: 'config.json not UTF-8', expect: [/config\.json: is not valid UTF-8/], mutate: async (d) => { const f = join(d, 'config.json'); const b = await readFile(f); b[20] = 0xc3; b[21] = 0x28; await writeFile(f, b); } },
  { name: 'config.json an array', expect: [/config\.json: expected a JSON object, found \[\]/], mutate: (d) => writeFile(join(d, 'config.json'), '[]') },
  { name: 'config.json missing', expect: [/config\.json: not found/], mutate: (d) => rm(join(d, 'config.json')) },
  { name: 'config: hidden_size a string', expect: [/config\.json: field "hidden_size": expected a positive integer, found "8"/], mutate: (d) => editConfig(d, (c) => { c.hidden_size = '8'; }) },
  { name: 'config: num_hidden_layers missing', expect: [/config\.json: field "num_hidden_layers": expected a positive integer, found nothing/], mutate: (d) => editConfig(d, (c) => { delete c.num_hidden_layers; }) },
  { name: 'config: intermediate_size negative', expect: [/config\.json: field "intermediate_size": expected a positive integer, found -12/], mutate: (d) => editConfig(d, (c) => { c.intermediate_size = -12; }) },
  { name: 'config: vocab_size zero', expect: [/config\.json: field "vocab_size": expected a positive integer, found 0/], mutate: (d) => editConfig(d, (c) => { c.vocab_size = 0; }) },
  { name: 'config: rms_norm_eps null', expect: [/config\.json: field "rms_norm_eps": expected a positive number, found null/], mutate: (d) => editConfig(d, (c) => { c.rms_norm_eps = null; }) },
  { name: 'config: eos_token_id wrong type', expect: [/config\.json: field "eos_token_id": expected a token id or a list of token ids, found "2"/], mutate: (d) => editConfig(d, (c) => { c.eos_token_id = '2'; }) },
  { name: 'config: unsupported model_type', expect: [/config\.json: field "model_type": unsupported model type "gpt2"; supported: "llama", "qwen2", "mistral"/], mutate: (d) => editConfig(d, (c) => { c.model_type = 'gpt2'; }) },
  { name: 'config: model_type missing', expect: [/config\.json: field "model_type": unsupported model type nothing/], mutate: (d) => editConfig(d, (c) => { delete c.model_type; }) },
  { name: 'config: rope dynamic', expect: [/config\.json: field "rope_scaling\.rope_type": "dynamic" RoPE scaling is not supported yet/], mutate: (d) => editConfig(d, (c) => { c.rope_scaling = { type: 'dynamic', factor: 2 }; }) },
  { name: 'config: rope yarn (v5)', expect: [/config\.json: field "rope_parameters\.rope_type": "yarn" RoPE scaling is not supported yet/], mutate: (d) => editConfig(d, (c) => { c.rope_parameters = { rope_type: 'yarn', rope_theta: 10000, factor: 4 }; }) },
  { name: 'config: rope type unknown', expect: [/field "rope_scaling\.rope_type": unknown RoPE type "spiral"/], mutate: (d) => editConfig(d, (c) => { c.rope_scaling = { rope_type: 'spiral' }; }) },
  { name: 'config: llama3 rope missing factor', expect: [/config\.json: field "rope_scaling\.factor": expected a positive number, found nothing/], mutate: (d) => editConfig(d, (c) => { c.rope_scaling = { rope_type: 'llama3', low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 32 }; }) },
  { name: 'config: rope_theta disagrees across v4/v5 fields', expect: [/config\.json: field "rope_parameters\.rope_theta": is 500 but rope_theta elsewhere/], mutate: (d) => editConfig(d, (c) => { c.rope_parameters = { rope_type: 'default', rope_theta: 500 }; }) },
  { name: 'config: heads not divisible by kv heads', expect: [/config\.json: field "num_key_value_heads": 3 does not divide num_attention_heads 2/], mutate: (d) => editConfig(d, (c) => { c.num_key_value_heads = 3; }) },
  { name: 'config: hidden not divisible by heads', expect: [/config\.json: field "hidden_size": 8 is not divisible by num_attention_heads 3/], mutate: (d) => editConfig(d, (c) => { c.num_attention_heads = 3; c.num_key_value_heads = 1; }) },
  { name: 'config: hidden_act gelu', expect: [/config\.json: field "hidden_act": expected "silu".*found "gelu"/], mutate: (d) => editConfig(d, (c) => { c.hidden_act = 'gelu'; }) },
  { name: 'config: mlp_bias true', expect: [/config\.json: field "mlp_bias": is true; MLP biases are not supported/], mutate: (d) => editConfig(d, (c) => { c.mlp_bias = true; }) },
  { name: 'config: attention_bias true (llama)', expect: [/config\.json: field "attention_bias": is true/], mutate: (d) => editConfig(d, (c) => { c.attention_bias = true; }) },
  { name: 'config: use_sliding_window true', expect: [/config\.json: field "use_sliding_window": is true; sliding-window attention is not supported/], mutate: (d) => editConfig(d, (c) => { c.model_type = 'qwen2'; c.use_sliding_window = true; }) },
  { name: 'config: torch_dtype unknown', expect: [/config\.json: field "torch_dtype": expected "float32", "bfloat16" or "float16", found "int4"/], mutate: (d) => editConfig(d, (c) => { c.torch_dtype = 'int4'; }) },
  { name: 'config: vocab_size disagrees with the weights', expect: [/model\.safetensors: tensor "model\.embed_tokens\.weight": shape \[16,8\] does not match config\.json: expected \[vocab_size, hidden_size\] = \[17,8\]/], mutate: (d) => editConfig(d, (c) => { c.vocab_size = 17; }) },
  { name: 'config: tie_word_embeddings not a boolean', expect: [/config\.json: field "tie_word_embeddings": expected true or false, found "yes"/], mutate: (d) => editConfig(d, (c) => { c.tie_word_embeddings = 'yes'; }) },
  { name: 'generation_config.json invalid JSON', expect: [/generation_config\.json: invalid JSON at line 1, column 22 /], mutate: (d) => writeFile(join(d, 'generation_config.json'), '{"eos_token_id": [1, }') },
  { name: 'generation_config.json bad eos', expect: [/generation_config\.json: field "eos_token_id\.1": expected a non-negative integer token id, found -2/], mutate: (d) => writeJson(join(d, 'generation_config.json'), { eos_token_id: [1, -2] }) },
  // sharded checkpoints
  { name: 'index points to a missing shard', base: 'sharded', expect: [/model\.safetensors\.index\.json: weight_map "[^"]+": points to shard "model-00002-of-00002\.safetensors", which does not exist/], mutate: (d) => rm(join(d, 'model-00002-of-00002.safetensors')) },
  { name: 'index names a tensor its shard lacks', base: 'sharded', expect: [/model\.safetensors\.index\.json: weight_map "model\.ghost\.weight": points to shard "model-00001-of-00002\.safetensors", which has no such tensor/], mutate: async (d) => { const f = join(d, 'model.safetensors.index.json'); const idx = JSON.parse(await readFile(f, 'utf8')) as { weight_map: Record<string, string> }; idx.weight_map['model.ghost.weight'] = 'model-00001-of-00002.safetensors'; await writeJson(f, idx); } },
  { name: 'index invalid JSON', base: 'sharded', expect: [/model\.safetensors\.index\.json: invalid JSON at the end of the input \(line 1, column 17\)/], mutate: (d) => writeFile(join(d, 'model.safetensors.index.json'), '{"weight_map": {') },
  { name: 'index weight_map missing', base: 'sharded', expect: [/model\.safetensors\.index\.json: field "weight_map": expected an object/], mutate: (d) => writeJson(join(d, 'model.safetensors.index.json'), { metadata: {} }) },
  { name: 'index escapes the directory', base: 'sharded', expect: [/model\.safetensors\.index\.json: weight_map "[^"]+": expected a shard file name inside the model directory, found "\.\.\/x\.safetensors"/], mutate: async (d) => { const f = join(d, 'model.safetensors.index.json'); const idx = JSON.parse(await readFile(f, 'utf8')) as { weight_map: Record<string, string> }; idx.weight_map[FIRST] = '../x.safetensors'; await writeJson(f, idx); } },
  { name: 'shard truncated', base: 'sharded', expect: [/model-00002-of-00002\.safetensors: tensor "[^"]+": data_offsets .* end beyond the data section/], mutate: async (d) => { const f = join(d, 'model-00002-of-00002.safetensors'); const { n, data } = await readParts(f); await truncate(f, 8 + n + data.length - 5); } },
  { name: 'tensor missing from every shard', base: 'sharded', expect: [/model\.safetensors\.index\.json, .*model-00001-of-00002\.safetensors, .*model-00002-of-00002\.safetensors: tensor "model\.norm\.weight": not found/], mutate: async (d) => { const f = join(d, 'model.safetensors.index.json'); const idx = JSON.parse(await readFile(f, 'utf8')) as { weight_map: Record<string, string> }; const shard = idx.weight_map[LAST]!; delete idx.weight_map[LAST]; await writeJson(f, idx); const t = tinyTensors(TINY); const part = Object.fromEntries(Object.entries(idx.weight_map).filter(([, s]) => s === shard).map(([name]) => [name, t[name]!])); await writeSafetensors(join(d, shard), part); } },
];

let baseSingle = '';
let baseSharded = '';
test('corruption: the unmutated bases load', async () => {
  baseSingle = await freshDir('base-single');
  await writeTinyModel(baseSingle, TINY);
  baseSharded = await freshDir('base-sharded');
  await writeTinyModel(baseSharded, TINY, { shards: 2 });
  assert.is((await loadDir(baseSingle)).tensors.size, expectedCount(TINY));
  assert.is((await loadDir(baseSharded)).tensors.size, expectedCount(TINY));
});

const LIMIT_MS = 1000;
for (const m of mutations) {
  test(`corruption: ${m.name}`, async () => {
    const dir = await freshDir(m.name);
    await cp(m.base === 'sharded' ? baseSharded : baseSingle, dir, { recursive: true });
    await m.mutate(dir);
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      loadDir(dir).then(() => ({ kind: 'loaded' as const }), (err: unknown) => ({ kind: 'error' as const, err })),
      new Promise<{ kind: 'timeout' }>((res) => { timer = setTimeout(() => res({ kind: 'timeout' }), LIMIT_MS * 5); }),
    ]);
    clearTimeout(timer);
    const elapsed = performance.now() - started;
    if (outcome.kind !== 'error') {
      assert.unreachable(`expected a rejection, got ${outcome.kind}`);
      return;
    }
    const err = outcome.err;
    assert.instance(err, ModelFormatError, `a ModelFormatError, not ${String(err)}`);
    const message = (err as Error).message;
    for (const re of m.expect) assert.match(message, re, `message ${JSON.stringify(message)} should match ${re}`);
    assert.ok(elapsed < LIMIT_MS, `took ${elapsed.toFixed(0)} ms`);
  });
}

test.run();
