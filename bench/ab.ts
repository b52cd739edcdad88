// A/B of two GEMM variants call by call in one process: two builds of the native addon, or one
// build under two environments (the kernels' switches are read per call). On a shared machine
// whose speed drifts by 2x within minutes, alternating separate runs needs many pairs to see a 5 %
// change; alternating single timed batches inside one process sees it in a few seconds, because
// both variants meet the same drift.
//
//   npx tsx bench/ab.ts [--a ADDON] [--b ADDON] [--a-env K=V,...] [--b-env K=V,...]
//                       [--shapes NT:1024x1536x576:bf16,...] [--update] [--packed-b] [--calls 15] [--threads 2]
//
// ADDON: a path to a sealkit.node (default: this checkout's build). A shape is ORIENT:MxNxK:BDTYPE
// with ORIENT NT (y = x W^T), NN (dx = dy W) or TN (dW = dy^T x) and BDTYPE f32 or bf16; the
// default shapes are the SmolLM2-135M and tiny training GEMMs. ATTN:HxKVxDxSxL is causal attention
// (H query heads, KV kv heads of D, S sequences of L tokens; attention_bench), timed forward and
// backward as two rows, GFLOP/s counting 2 and 5 causal products (ATTN:9x3x64x4x256 is SmolLM2's
// training shape, ATTN:4x2x32x4x256 the tiny preset's; a :bf16 suffix asks for bf16 products, as a
// bf16 model does, which SEALKIT_ATTENTION_BF16=0 in one variant's environment turns off). --update
// adds a rank-16 low-rank update riding on the tiles, as LoRA's forward and input gradient do (NT
// and NN only). --packed-b
// hands the NT and NN GEMMs their bf16 B packed ahead (as the model's weights), packed outside the
// timing; SEALKIT_PACKED_WEIGHTS=0 in one variant's environment makes its GEMMs ignore it.
// --b-bf16-rows hands variant B's NT and NN GEMMs A as bf16 rows (aDtype 'bf16': A rounded to bf16,
// as scoring's norms and SwiGLU hand it to the projections) where A gets f32 A. Each of
// --calls rounds times one batch of ~50 ms per variant (gemm_bench: natively timed, aligned
// operands) and takes the batch's median; the table gives each variant's median GFLOP/s and the
// median over rounds of the per-round speed ratio B/A (> 1: B is faster). The last line is JSON.
//
// Example: is the task-local packing worth it on this machine?
//   npx tsx bench/ab.ts --a-env SEALKIT_LOCAL_PACK=0 --update
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { parseEnvList, withEnv } from '../lib/bench/env.js';
import { median } from '../lib/bench/median.js';
import { randomF32, toBf16 } from '../lib/bench/operands.js';
import { native, type NativeAddon } from '../lib/native.js';

const { values: opts } = parseArgs({
  options: {
    a: { type: 'string' },
    b: { type: 'string' },
    'a-env': { type: 'string', default: '' },
    'b-env': { type: 'string', default: '' },
    shapes: { type: 'string' },
    update: { type: 'boolean', default: false },
    'packed-b': { type: 'boolean', default: false },
    'b-bf16-rows': { type: 'boolean', default: false },
    calls: { type: 'string', default: '15' },
    threads: { type: 'string', default: '2' },
  },
});

const DEFAULT_SHAPES = [
  // SmolLM2-135M, 4 x 256 tokens: q/o, k/v, gate/up, down forward (NT) and input gradients (NN), LM head.
  'NT:1024x576x576:bf16', 'NT:1024x192x576:bf16', 'NT:1024x1536x576:bf16', 'NT:1024x576x1536:bf16',
  'NN:1024x576x576:bf16', 'NN:1024x576x192:bf16', 'NN:1024x576x1536:bf16', 'NN:1024x1536x576:bf16',
  'NT:256x49152x576:bf16', 'NN:256x576x49152:bf16',
  // tiny (hidden 128, intermediate 384, vocab 512).
  'NT:1024x128x128:bf16', 'NT:1024x384x128:bf16', 'NN:1024x128x384:bf16', 'NT:256x512x128:bf16', 'NN:256x128x512:bf16',
];

interface GemmShape { kind: 'gemm'; text: string; orient: 'NT' | 'NN' | 'TN'; M: number; N: number; K: number; bDtype: 'f32' | 'bf16' }
interface AttnShape {
  kind: 'attn'; text: string; heads: number; kvHeads: number; headDim: number; seqs: number; len: number; bf16: boolean;
}
type Shape = GemmShape | AttnShape;

function parseShape(text: string): Shape {
  const a = /^ATTN:(\d+)x(\d+)x(\d+)x(\d+)x(\d+)(:bf16)?$/.exec(text.trim());
  if (a) {
    const [heads, kvHeads, headDim, seqs, len] = a.slice(1, 6).map(Number) as [number, number, number, number, number];
    if (!(heads > 0 && kvHeads > 0 && headDim > 0 && seqs > 0 && len > 0) || heads % kvHeads)
      throw new Error(`--shapes: ATTN needs positive sizes with KV dividing H, got '${text}'`);
    return { kind: 'attn', text: text.trim(), heads, kvHeads, headDim, seqs, len, bf16: a[6] !== undefined };
  }
  const m = /^(NT|NN|TN):(\d+)x(\d+)x(\d+):(f32|bf16)$/.exec(text.trim());
  if (!m) throw new Error(`--shapes: expected ORIENT:MxNxK:BDTYPE (e.g. NT:1024x576x576:bf16) or ATTN:HxKVxDxSxL[:bf16], got '${text}'`);
  return { kind: 'gemm', text: text.trim(), orient: m[1] as GemmShape['orient'], M: Number(m[2]), N: Number(m[3]), K: Number(m[4]), bDtype: m[5] as GemmShape['bDtype'] };
}

const require = createRequire(import.meta.url);
const load = (path: string | undefined): NativeAddon => (path ? (require(path) as NativeAddon) : native());
const variants = [
  { addon: load(opts.a), env: parseEnvList(opts['a-env'], '--a-env'), what: `${opts.a ?? 'this build'}${opts['a-env'] ? ` ${opts['a-env']}` : ''}` },
  {
    addon: load(opts.b), env: parseEnvList(opts['b-env'], '--b-env'),
    what: `${opts.b ?? 'this build'}${opts['b-env'] ? ` ${opts['b-env']}` : ''}${opts['b-bf16-rows'] ? ', A as bf16 rows' : ''}`,
  },
];
const shapes = (opts.shapes ? opts.shapes.split(',') : DEFAULT_SHAPES).map(parseShape);
const calls = Number(opts.calls), threads = Number(opts.threads);
if (!Number.isInteger(calls) || calls < 1) throw new Error(`--calls: expected a positive integer, got '${opts.calls}'`);
if (!Number.isInteger(threads) || threads < 1) throw new Error(`--threads: expected a positive integer, got '${opts.threads}'`);
if (opts.update && shapes.some((s) => s.kind === 'gemm' && s.orient === 'TN')) throw new Error('--update: LoRA updates ride on NT and NN GEMMs only');
for (const v of variants) v.addon.setThreads(threads);

const rows: { shape: string; update: boolean; a_gflops: number; b_gflops: number; b_over_a: number }[] = [];
console.log(`A: ${variants[0]!.what}\nB: ${variants[1]!.what}\n${threads} threads, ${calls} rounds${opts.update ? ', rank-16 update on the tiles' : ''}${opts['packed-b'] ? ', B packed ahead' : ''}`);
console.log(`${'shape'.padEnd(24)} ${'A GFLOP/s'.padStart(10)} ${'B GFLOP/s'.padStart(10)} ${'B/A'.padStart(7)}`);
// Alternating batches of ~50 ms per variant, `calls` rounds: each variant's median time per call and
// the median over rounds of the per-round speed ratio B/A. `time` runs one batch of `iters` calls and
// returns the median call's seconds.
function compare(time: (v: (typeof variants)[number], iters: number) => number): { a: number; b: number; ratio: number } {
  // One call sizes the batches (at least one call), and warms both variants up.
  const iters = Math.max(1, Math.round(0.05 / time(variants[0]!, 1)));
  time(variants[1]!, 1);
  const ta: number[] = [], tb: number[] = [];
  for (let i = 0; i < calls; i++) {
    ta.push(time(variants[0]!, iters));
    tb.push(time(variants[1]!, iters));
  }
  return { a: median(ta), b: median(tb), ratio: median(ta.map((t, i) => t / tb[i]!)) };
}

function report(text: string, flops: number, r: { a: number; b: number; ratio: number }, update: boolean): void {
  const row = { shape: text, update, a_gflops: flops / r.a / 1e9, b_gflops: flops / r.b / 1e9, b_over_a: r.ratio };
  rows.push(row);
  console.log(`${text.padEnd(24)} ${row.a_gflops.toFixed(1).padStart(10)} ${row.b_gflops.toFixed(1).padStart(10)} ${row.b_over_a.toFixed(3).padStart(7)}`);
}

function runAttention(s: AttnShape): void {
  const rows = s.seqs * s.len, D = s.headDim;
  const args: Record<string, unknown> = {
    rows, heads: s.heads, kvHeads: s.kvHeads, headDim: D, scale: 1 / Math.sqrt(D),
    seqStart: Int32Array.from({ length: s.seqs }, (_, i) => i * s.len), seqLen: new Int32Array(s.seqs).fill(s.len),
    q: randomF32(rows * s.heads * D, 1), k: randomF32(rows * s.kvHeads * D, 2), v: randomF32(rows * s.kvHeads * D, 3),
    dout: randomF32(rows * s.heads * D, 4), bf16Products: s.bf16,
  };
  const product = 2 * s.seqs * s.heads * ((s.len * (s.len + 1)) / 2) * D; // one causal matmul
  for (const [pass, products] of [['forward', 2], ['backward', 5]] as const) {
    const r = compare((v, iters) => withEnv(v.env, () => median(Array.from(v.addon.opRun('attention_bench', 'f32', { ...args, iters })[pass] as Float64Array))));
    report(`${s.text} ${pass === 'forward' ? 'fwd' : 'bwd'}`, products * product, r, false);
  }
}

for (const s of shapes) {
  if (s.kind === 'attn') {
    runAttention(s);
    continue;
  }
  const bf = randomF32(s.N * s.K, 2);
  const args: Record<string, unknown> = {
    M: s.M, N: s.N, K: s.K, transA: s.orient === 'TN', transB: s.orient === 'NT',
    A: randomF32(s.M * s.K, 1), B: s.bDtype === 'bf16' ? toBf16(bf) : bf, bDtype: s.bDtype,
  };
  if (opts.update) Object.assign(args, { U: randomF32(s.M * 16, 3), V: randomF32(16 * s.N, 4), rank: 16, transV: s.orient === 'NT', updateScale: 2 });
  if (opts['packed-b'] && s.orient !== 'TN') args.packedB = true;
  // Variant B's A as bf16 rows (NT and NN: op(A) = A).
  const rowsB = opts['b-bf16-rows'] && s.orient !== 'TN' ? { aDtype: 'bf16', A: toBf16(args.A as Float32Array) } : {};
  const r = compare((v, iters) => withEnv(v.env, () => {
    const extra = v === variants[1] ? rowsB : {};
    return median(Array.from(v.addon.opRun('gemm_bench', 'f32', { ...args, ...extra, iters }).times as Float64Array));
  }));
  report(s.text, 2 * s.M * s.N * s.K, r, opts.update);
}
console.log(JSON.stringify({ a: variants[0]!.what, b: variants[1]!.what, threads, calls, rows }));
