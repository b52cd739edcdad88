// PEFT LoRA adapters on disk: adapter_config.json + adapter_model.safetensors, with keys and shapes
// exactly as PEFT writes them (base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight,
// A [r, in], B [out, r]), so adapters move freely between this engine, PEFT and vLLM.
import { mkdir, writeFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { ModelFormatError, describeValue } from './format-error.js';
import { readJsonObject } from './json-file.js';
import type { Model } from './model.js';
import { PROJ_NAMES, type ProjName } from './native-model.js';
import { readSafetensorsHeader, readTensor, writeSafetensors, type TensorToWrite } from './safetensors.js';

export interface PeftAdapterConfig {
  rank: number;
  alpha: number;
  rslora: boolean;
  dropout: number;
  targets: ProjName[];
  baseModel: string | null;
}

const MLP: ReadonlySet<ProjName> = new Set(['gate_proj', 'up_proj', 'down_proj']);
export function peftKey(layer: number, proj: ProjName, which: 'A' | 'B'): string {
  return `base_model.model.model.layers.${layer}.${MLP.has(proj) ? 'mlp' : 'self_attn'}.${proj}.lora_${which}.weight`;
}

const KEY = /^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.lora_(A|B)(?:\.[A-Za-z0-9_-]+)?\.weight$/;

/** Parses adapter_config.json; anything this engine cannot reproduce exactly is an error. */
export async function readPeftConfig(dir: string): Promise<PeftAdapterConfig> {
  const file = join(dir, 'adapter_config.json');
  const raw = await readJsonObject(file, 'a PEFT adapter directory with adapter_config.json');
  const fail = (field: string, detail: string): never => { throw new ModelFormatError(file, `field "${field}"`, detail); };
  if (raw.peft_type !== undefined && raw.peft_type !== 'LORA') fail('peft_type', `expected "LORA", found ${describeValue(raw.peft_type)}`);
  const rank = raw.r;
  if (typeof rank !== 'number' || !Number.isInteger(rank) || rank <= 0) fail('r', `expected a positive integer, found ${describeValue(rank)}`);
  const alpha = raw.lora_alpha ?? rank;
  if (typeof alpha !== 'number' || !(alpha > 0)) fail('lora_alpha', `expected a positive number, found ${describeValue(raw.lora_alpha)}`);
  const dropout = raw.lora_dropout ?? 0;
  if (typeof dropout !== 'number' || dropout < 0 || dropout >= 1) fail('lora_dropout', `expected a number in [0, 1), found ${describeValue(dropout)}`);
  for (const flag of ['use_dora', 'fan_in_fan_out']) if (raw[flag] === true) fail(flag, 'is true; not supported (expected false)');
  if (raw.bias !== undefined && raw.bias !== 'none') fail('bias', `expected "none", found ${describeValue(raw.bias)}`);
  for (const pat of ['rank_pattern', 'alpha_pattern']) {
    const v = raw[pat];
    if (v !== undefined && v !== null && (typeof v !== 'object' || Object.keys(v).length > 0)) fail(pat, 'per-module rank/alpha overrides are not supported (expected {})');
  }
  if (Array.isArray(raw.modules_to_save) && raw.modules_to_save.length > 0) fail('modules_to_save', 'full module copies are not supported (expected null)');
  let targets: ProjName[];
  const tm = raw.target_modules;
  if (tm === 'all-linear') {
    targets = [...PROJ_NAMES];
  } else if (typeof tm === 'string') {
    // PEFT matches a regex string against the full module name with re.fullmatch.
    let re: RegExp;
    try { re = new RegExp(`^(?:${tm})$`); } catch { return fail('target_modules', `invalid regular expression ${describeValue(tm)}`); }
    targets = PROJ_NAMES.filter((p) => re.test(`model.layers.0.${MLP.has(p) ? 'mlp' : 'self_attn'}.${p}`));
  } else if (Array.isArray(tm) && tm.every((t) => typeof t === 'string')) {
    const unknown = tm.filter((t) => !(PROJ_NAMES as readonly string[]).includes(t));
    if (unknown.length) fail('target_modules', `unsupported module(s) ${describeValue(unknown)}; supported: ${PROJ_NAMES.join(', ')}`);
    targets = PROJ_NAMES.filter((p) => tm.includes(p));
  } else {
    return fail('target_modules', `expected a list of module names, a regex string or "all-linear", found ${describeValue(tm)}`);
  }
  if (targets.length === 0) fail('target_modules', `matches none of ${PROJ_NAMES.join(', ')}`);
  return {
    rank: rank as number, alpha: alpha as number, rslora: raw.use_rslora === true, dropout: dropout as number, targets,
    baseModel: typeof raw.base_model_name_or_path === 'string' ? raw.base_model_name_or_path : null,
  };
}

function toFloat32(t: unknown, dtype: string, file: string, key: string): Float32Array {
  if (dtype === 'F32' && t instanceof Float32Array) return t;
  if ((dtype === 'BF16' || dtype === 'F16') && t instanceof Uint16Array) {
    const out = new Float32Array(t.length);
    const u32 = new Uint32Array(out.buffer);
    for (let i = 0; i < t.length; i++) {
      const h = t[i] ?? 0;
      if (dtype === 'BF16') { u32[i] = h << 16; continue; }
      const sign = h & 0x8000 ? -1 : 1;
      const exp = (h >> 10) & 0x1f;
      const mant = h & 0x3ff;
      out[i] = exp === 0 ? sign * mant * 2 ** -24 : exp === 31 ? (mant ? NaN : sign * Infinity) : sign * (1 + mant / 1024) * 2 ** (exp - 15);
    }
    return out;
  }
  throw new ModelFormatError(file, `tensor "${key}"`, `dtype ${dtype} is not supported for adapters (F32, BF16, F16)`);
}

/** Loads a PEFT adapter directory into `slot` of the model (replacing what was there). */
export async function loadPeftAdapter(model: Model, dir: string, slot: number): Promise<PeftAdapterConfig> {
  const cfg = await readPeftConfig(dir);
  const file = join(dir, 'adapter_model.safetensors');
  const header = await readSafetensorsHeader(file);
  const c = model.config;
  const found = new Map<string, { layer: number; proj: ProjName; which: 'A' | 'B' }>();
  for (const name of header.tensors.keys()) {
    const m = KEY.exec(name);
    if (!m) throw new ModelFormatError(file, `tensor "${name}"`, 'is not a LoRA weight of a supported projection (expected base_model.model.model.layers.N.{self_attn|mlp}.<proj>.lora_{A|B}.weight)');
    const layer = Number(m[1]);
    const proj = m[3] as ProjName;
    if (layer >= c.numLayers) throw new ModelFormatError(file, `tensor "${name}"`, `layer ${layer} does not exist (the model has ${c.numLayers})`);
    if (!cfg.targets.includes(proj)) throw new ModelFormatError(file, `tensor "${name}"`, `${proj} is not among target_modules in adapter_config.json`);
    found.set(name, { layer, proj, which: m[4] as 'A' | 'B' });
  }
  if (found.size === 0) throw new ModelFormatError(file, undefined, 'holds no LoRA tensors');
  model.createAdapter(slot, { rank: cfg.rank, alpha: cfg.alpha, rslora: cfg.rslora, dropout: cfg.dropout, targets: cfg.targets });
  const dims = (proj: ProjName): [number, number] => {
    const dq = c.numHeads * c.headDim, dkv = c.numKvHeads * c.headDim, H = c.hiddenSize, I = c.intermediateSize;
    const inOut: Record<ProjName, [number, number]> = {
      q_proj: [H, dq], k_proj: [H, dkv], v_proj: [H, dkv], o_proj: [dq, H], gate_proj: [H, I], up_proj: [H, I], down_proj: [I, H],
    };
    return inOut[proj];
  };
  // Projections PEFT targeted but left out of some layers (layers_to_transform) keep B = 0: no effect.
  const zeroB = new Set<string>();
  for (let l = 0; l < c.numLayers; l++) for (const p of cfg.targets) zeroB.add(`${l}.${p}`);
  for (const [name, { layer, proj, which }] of found) {
    const entry = header.tensors.get(name)!;
    const [inDim, outDim] = dims(proj);
    const expected = which === 'A' ? [cfg.rank, inDim] : [outDim, cfg.rank];
    if (entry.shape.length !== 2 || entry.shape[0] !== expected[0] || entry.shape[1] !== expected[1]) {
      throw new ModelFormatError(file, `tensor "${name}"`, `shape ${JSON.stringify(entry.shape)} does not match the model: expected ${JSON.stringify(expected)}`);
    }
    model.setAdapterTensor(slot, layer, proj, which, toFloat32(await readTensor(header, name), entry.dtype, file, name));
    if (which === 'B') zeroB.delete(`${layer}.${proj}`);
  }
  for (const key of zeroB) {
    const [l, p] = key.split('.') as [string, ProjName];
    const [, outDim] = dims(p);
    model.setAdapterTensor(slot, Number(l), p, 'B', new Float32Array(outDim * cfg.rank));
  }
  return cfg;
}

/** Writes the adapter in `slot` as a PEFT directory (f32 tensors). */
export async function savePeftAdapter(model: Model, slot: number, dir: string, options: { baseModel?: string } = {}): Promise<void> {
  const info = model.adapterInfo(slot);
  if (!info) throw new Error(`savePeftAdapter: no adapter in slot ${slot}`);
  await mkdir(dir, { recursive: true });
  const tensors: Record<string, TensorToWrite> = {};
  for (let l = 0; l < model.config.numLayers; l++) {
    for (const p of info.targets) {
      for (const w of ['A', 'B'] as const) {
        const data = model.getAdapterTensor(slot, l, p, w);
        tensors[peftKey(l, p, w)] = { dtype: 'F32', shape: w === 'A' ? [info.rank, data.length / info.rank] : [data.length / info.rank, info.rank], data };
      }
    }
  }
  await writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
  const config = {
    peft_type: 'LORA', task_type: 'CAUSAL_LM', base_model_name_or_path: options.baseModel ?? model.sourceDir ?? null, revision: null,
    r: info.rank, lora_alpha: info.alpha, lora_dropout: info.dropout, target_modules: info.targets, use_rslora: info.rslora,
    use_dora: false, bias: 'none', fan_in_fan_out: false, modules_to_save: null, init_lora_weights: true,
    layers_to_transform: null, layers_pattern: null, rank_pattern: {}, alpha_pattern: {}, inference_mode: true,
  };
  const tmp = join(dir, `.adapter_config.json.${process.pid}.tmp`);
  await writeFile(tmp, `${JSON.stringify(config, null, 2)}\n`);
  await rename(tmp, join(dir, 'adapter_config.json'));
}
