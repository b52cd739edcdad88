// Op-level parity: every Backend kernel run on the CUDA backend against the CPU backend, through the
// addon's backendOp (native/addon/backend_binding.cc), on random inputs of realistic, odd shapes.
//
// Error measure: max |cuda - cpu| / max |cpu| over the output (relative to the output's norm, so
// cancellation in single elements does not produce spurious failures). Tolerances:
//  - f32 paths (GEMM with f32 B, attention, norms, RoPE, SwiGLU, cross-entropy, AdamW): 1e-4. Both
//    backends compute in f32 with the same formulas; only summation order and FMA contraction
//    differ, which leaves ~1e-6 in practice.
//  - GEMM with a bf16 B on tensor cores: 1e-2. The GPU rounds A to bf16 (2^-9 relative per
//    element); the CPU keeps A in f32 unless it runs its AVX512-BF16 kernels, which round A too.
//    Errors of independent products average out to ~1e-3 of the output's norm. With
//    SEALKIT_CUDA_EXACT_GEMM=1 the GPU widens B instead and must agree to 1e-4 like the f32 path,
//    against each CPU instruction set that keeps A in f32.
//  - Random fills, dropout masks, embedding lookups and dtype conversion must match exactly (the
//    same counter RNG and rounding code run on both); fill_normal may differ in the last bit
//    (double log/cos of the GPU vs glibc), so it gets 1e-6.
// The largest error seen for each op is printed, so a GPU run documents its own margins.
//
// Without a CUDA build of the addon, or without a GPU, every test is registered but skipped with a
// message: the suite passes on machines without a GPU (CI).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { native } from '../lib/native.js';
import { bf16Bits } from './helpers/bf16.js';
import { forEachIsa, supportedIsas } from './helpers/isa.js';
import { rng as uniform } from './helpers/random.js';

type Arr = Float32Array | Uint16Array | Int32Array;
type Out = Record<string, Arr | number>;
type BackendOp = (device: 'cpu' | 'cuda', name: string, args: Record<string, unknown>) => Out;

const addon = native();
const backendOp = addon.backendOp as BackendOp | undefined;

function whyUnavailable(): string | undefined {
  if (typeof backendOp !== 'function') return 'the addon has no backendOp';
  if (!addon.info().cuda) return 'the addon was built without CUDA (npm run build:cuda)';
  try {
    backendOp('cuda', 'sum_squares', { x: new Float32Array(4) });
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
  return undefined;
}
const skipReason = whyUnavailable();
if (skipReason) console.log(`backend-parity: every test skipped: ${skipReason}`);
const gpuTest = skipReason ? test.skip : test;

// ---- deterministic random inputs (mulberry32 + Box-Muller) ----
function rng(seed: number) {
  const u = uniform(seed);
  const normal = () => Math.sqrt(-2 * Math.log(u() + 1e-12)) * Math.cos(2 * Math.PI * u());
  return {
    u,
    normal,
    f32: (n: number, scale = 1) => Float32Array.from({ length: n }, () => normal() * scale),
    int: (n: number, lo: number, hi: number) => Int32Array.from({ length: n }, () => lo + Math.floor(u() * (hi - lo))),
  };
}

function run(name: string, args: Record<string, unknown>): { cpu: Out; cuda: Out } {
  const op = backendOp!;
  return { cpu: op('cpu', name, args), cuda: op('cuda', name, args) };
}

function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.is(a.length, b.length, 'length');
  let diff = 0;
  let ref = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (Number.isNaN(x) !== Number.isNaN(y)) return Infinity;
    if (Number.isNaN(x)) continue;
    if (x !== y) diff = Math.max(diff, Math.abs(x - y));
    ref = Math.max(ref, Math.abs(y));
  }
  return diff === 0 ? 0 : diff / Math.max(ref, 1e-30);
}

const worst = new Map<string, number>();
function close(what: string, r: { cpu: Out; cuda: Out }, key: string, tol: number): void {
  const a = r.cuda[key] as ArrayLike<number>;
  const b = r.cpu[key] as ArrayLike<number>;
  const e = relErr(a, b);
  worst.set(`${what}.${key}`, Math.max(worst.get(`${what}.${key}`) ?? 0, e));
  assert.ok(e <= tol, `${what} ${key}: relative error ${e.toExponential(3)} > ${tol}`);
}
function exact(what: string, r: { cpu: Out; cuda: Out }, key: string): void {
  close(what, r, key, 0);
}

// ---- GEMM ----
for (const bDtype of ['f32', 'bf16'] as const) {
  for (const [transA, transB] of [[false, false], [false, true], [true, false], [true, true]] as const) {
    gpuTest(`gemm ${bDtype} B, transA=${transA} transB=${transB}: odd shapes, padded strides, alpha/beta`, () => {
      const g = rng(11 + (transA ? 1 : 0) + (transB ? 2 : 0) + (bDtype === 'bf16' ? 4 : 0));
      for (const [M, N, K] of [[67, 129, 93], [1, 513, 300], [300, 7, 1001], [257, 1000, 64]] as const) {
        const lda = (transA ? M : K) + 3;
        const ldb = (transB ? K : N) + 5;
        const ldc = N + 2;
        const A = g.f32((transA ? K : M) * lda);
        const Bf = g.f32((transB ? N : K) * ldb, 0.5);
        const B = bDtype === 'bf16' ? bf16Bits(Bf) : Bf;
        const C = g.f32((M - 1) * ldc + N);
        const tol = bDtype === 'bf16' ? 1e-2 : 1e-4;
        const base = { M, N, K, lda, ldb, ldc, transA, transB, A, B, bDtype };
        close(`gemm.${bDtype}`, run('gemm', { ...base, C, alpha: 0.7, beta: 0.3 }), 'C', tol);
        // beta = 0 must ignore C entirely, NaNs included.
        const nanC = new Float32Array(C.length).fill(NaN);
        const r = run('gemm', { ...base, C: nanC, alpha: 1, beta: 0 });
        // Padding columns of C keep their NaN on both; compare only the written region.
        const pick = (x: Float32Array) => Float32Array.from({ length: M * N }, (_, i) => x[Math.floor(i / N) * ldc + (i % N)]!);
        const picked = { cpu: { C: pick(r.cpu.C as Float32Array) }, cuda: { C: pick(r.cuda.C as Float32Array) } };
        assert.ok(!(picked.cuda.C as Float32Array).some(Number.isNaN), 'beta = 0 read C');
        close(`gemm.${bDtype}`, picked, 'C', tol);
      }
    });
  }
}

// Unpadded strides that are multiples of 8 take the pipelined bf16 kernel (cp.async needs 16-byte
// aligned rows of B); K and N not multiples of 32/128 exercise its zero-filled edges, and the long-K,
// few-tile shapes its split-K path.
for (const [transA, transB] of [[false, false], [false, true], [true, false], [true, true]] as const) {
  gpuTest(`gemm bf16 B (pipelined path), transA=${transA} transB=${transB}`, () => {
    const g = rng(41 + (transA ? 1 : 0) + (transB ? 2 : 0));
    for (const [M, N, K] of [[200, 384, 256], [77, 136, 1000], [1, 2048, 4096], [4096, 64, 2048], [300, 1000, 64]] as const) {
      const lda = transA ? M : K;
      const ldb = transB ? K : N;
      const A = g.f32(M * K);
      const B = bf16Bits(g.f32(N * K, 0.5));
      const C = g.f32(M * N);
      close('gemm.bf16.pipelined', run('gemm', { M, N, K, lda, ldb, ldc: N, transA, transB, A, B, bDtype: 'bf16', C, alpha: 1.3, beta: 0.5 }), 'C', 1e-2);
    }
  });
}

gpuTest('gemm bf16 B with SEALKIT_CUDA_EXACT_GEMM=1 agrees to f32 accuracy', () => {
  const g = rng(99);
  const [M, N, K] = [129, 255, 511];
  const A = g.f32(M * K);
  const B = bf16Bits(g.f32(N * K));
  const C = g.f32(M * N);
  process.env.SEALKIT_CUDA_EXACT_GEMM = '1';
  try {
    // AVX512-BF16 rounds A to bf16 on the CPU side, so it is no f32 reference here.
    forEachIsa(() => {
      close('gemm.bf16.exact', run('gemm', { M, N, K, lda: K, ldb: K, ldc: N, transB: true, A, B, bDtype: 'bf16', C, beta: 1 }), 'C', 1e-4);
    }, supportedIsas().filter((isa) => isa !== 'avx512bf16'));
  } finally {
    delete process.env.SEALKIT_CUDA_EXACT_GEMM;
  }
});

gpuTest('gemm K = 0 gives beta * C', () => {
  const g = rng(5);
  const C = g.f32(6 * 9);
  const r = run('gemm', { M: 6, N: 9, K: 0, lda: 1, ldb: 9, ldc: 9, A: new Float32Array(1), B: new Float32Array(1), C, beta: 0.5 });
  close('gemm.k0', r, 'C', 1e-7);
});

// ---- embedding ----
gpuTest('embedding forward (f32 and bf16 tables) and deterministic backward with repeated ids', () => {
  const g = rng(21);
  const vocab = 5003;
  const dim = 96;
  const ids = g.int(777, 0, vocab);
  for (let i = 0; i < 100; i++) ids[i * 7] = 42;  // many repeats of one id
  const table = g.f32(vocab * dim);
  exact('embedding_forward', run('embedding_forward', { ids, vocab, dim, table }), 'out');
  exact('embedding_forward.bf16', run('embedding_forward', { ids, vocab, dim, table: bf16Bits(table), tableDtype: 'bf16' }), 'out');
  const dout = g.f32(ids.length * dim);
  const dtable = g.f32(vocab * dim, 0.1);
  // Both add the token gradients of each row in token order: identical bits.
  exact('embedding_backward', run('embedding_backward', { ids, vocab, dim, dout, dtable }), 'dtable');
});

// ---- RMSNorm ----
gpuTest('rmsnorm forward and backward (dx += and dw +=)', () => {
  const g = rng(31);
  for (const [rows, dim] of [[37, 1000], [300, 64], [1, 4096]] as const) {
    const x = g.f32(rows * dim, 2);
    const w = g.f32(dim);
    const f = run('rmsnorm_forward', { x, w, rows, dim, eps: 1e-5 });
    close('rmsnorm_forward', f, 'y', 1e-4);
    close('rmsnorm_forward', f, 'rstd', 1e-4);
    const rstd = f.cpu.rstd as Float32Array;
    const b = run('rmsnorm_backward', { x, w, rstd, dy: g.f32(rows * dim), dx: g.f32(rows * dim), dw: g.f32(dim), rows, dim });
    close('rmsnorm_backward', b, 'dx', 1e-4);
    close('rmsnorm_backward', b, 'dw', 1e-4);
  }
});

// ---- RoPE ----
gpuTest('rope forward and backward: large positions, padded row stride untouched', () => {
  const g = rng(41);
  for (const hd of [64, 128, 24]) {
    const rows = 300;
    const heads = 4;
    const rowStride = heads * hd + 16;
    const positions = g.int(rows, 0, 40000);
    const invFreq = Float32Array.from({ length: hd / 2 }, (_, i) => Math.pow(10000, (-2 * i) / hd));
    const x = g.f32(rows * rowStride);
    for (const name of ['rope_forward', 'rope_backward']) {
      close(name, run(name, { x, rows, rowStride, heads, headDim: hd, positions, invFreq }), 'x', 1e-4);
    }
  }
});

// ---- attention ----
const SEQS = [1, 300, 17, 64, 65, 129, 2, 33];
for (const [hd, heads, kvHeads] of [[64, 8, 2], [128, 4, 4], [128, 8, 1], [24, 4, 2], [16, 4, 2], [256, 2, 1]] as const) {
  gpuTest(`attention forward + backward: head_dim ${hd}, ${heads} heads / ${kvHeads} kv heads, packed lengths ${SEQS.join(',')}`, () => {
    const g = rng(51 + hd + heads);
    const seqLens = Int32Array.from(SEQS);
    const rows = SEQS.reduce((a, b) => a + b, 0);
    const qStride = heads * hd + 8;
    const kvStride = kvHeads * hd + 4;
    const shape = { heads, kvHeads, headDim: hd, qStride, kvStride, scale: 1 / Math.sqrt(hd), seqLens };
    const q = g.f32(rows * qStride);
    const k = g.f32(rows * kvStride);
    const v = g.f32(rows * kvStride);
    const f = run('attention_forward', { ...shape, q, k, v });
    close('attention_forward', f, 'out', 1e-4);
    close('attention_forward', f, 'lse', 1e-4);
    const dout = g.f32(rows * heads * hd);
    // dq/dk/dv start random: columns outside the heads must stay untouched on both backends.
    const b = run('attention_backward', {
      ...shape, q, k, v, out: f.cpu.out, lse: f.cpu.lse, dout,
      dq: g.f32(rows * qStride), dk: g.f32(rows * kvStride), dv: g.f32(rows * kvStride),
    });
    close('attention_backward', b, 'dq', 1e-4);
    close('attention_backward', b, 'dk', 1e-4);
    close('attention_backward', b, 'dv', 1e-4);
  });
}

// ---- generation: KV-cache attention, row gather/scatter ----
gpuTest('attention over a KV cache (prefill continuation and single-token decode) and row gather/scatter', () => {
  const g = rng(131);
  for (const [hd, heads, kvHeads] of [[64, 8, 2], [128, 4, 1], [24, 4, 2]] as const) {
    // Cache rows of 5 sequences laid out with gaps; each adds qLens new tokens stored last.
    const kvLens = Int32Array.from([1, 300, 40, 129, 7]);
    const qLens = Int32Array.from([1, 1, 40, 64, 3]);
    const kvStarts = Int32Array.from([0, 10, 400, 500, 700]);
    const cacheRows = 720;
    const rows = qLens.reduce((a, b) => a + b, 0);
    const qStride = heads * hd + 8;
    const kvStride = kvHeads * hd;
    const r = run('attention_cached_forward', {
      heads, kvHeads, headDim: hd, qStride, kvStride, scale: 1 / Math.sqrt(hd), qLens, kvStarts, kvLens, cacheRows,
      q: g.f32(rows * qStride), kCache: g.f32(cacheRows * kvStride), vCache: g.f32(cacheRows * kvStride),
    });
    close('attention_cached_forward', r, 'out', 1e-4);
  }
  const rows = Int32Array.from([5, 0, 17, 5, 3]);
  exact('gather_rows', run('gather_rows', { src: g.f32(20 * 40), srcStride: 40, srcRows: 20, rows, cols: 33, dst: g.f32(5 * 36), dstStride: 36 }), 'dst');
  const distinct = Int32Array.from([9, 0, 17, 4]);
  exact('scatter_rows', run('scatter_rows', { src: g.f32(4 * 40), srcStride: 40, dstRows: 20, rows: distinct, cols: 33, dst: g.f32(20 * 36), dstStride: 36 }), 'dst');
});

// ---- SwiGLU ----
gpuTest('swiglu forward and backward', () => {
  const g = rng(61);
  const n = 10007;
  const gate = g.f32(n, 3);
  const up = g.f32(n);
  close('swiglu_forward', run('swiglu_forward', { gate, up, n }), 'out', 1e-4);
  const b = run('swiglu_backward', { gate, up, dout: g.f32(n), n });
  close('swiglu_backward', b, 'dgate', 1e-4);
  close('swiglu_backward', b, 'dup', 1e-4);
});

// ---- cross-entropy ----
gpuTest('cross-entropy: vocab 50257, masked rows, zero grad_scale, in-place gradient', () => {
  const g = rng(71);
  const rows = 9;
  const vocab = 50257;
  const logits = g.f32(rows * vocab, 3);
  const targets = g.int(rows, 0, vocab);
  targets[2] = -1;  // masked row
  targets[5] = vocab - 1;
  const gradScale = Float32Array.from({ length: rows }, (_, i) => (i === 4 ? 0 : 1 / (i + 1)));
  const withGrad = run('cross_entropy', { logits, targets, rows, vocab, gradScale });
  close('cross_entropy', withGrad, 'loss', 1e-4);
  close('cross_entropy', withGrad, 'logits', 1e-4);
  const lossOnly = run('cross_entropy', { logits, targets, rows, vocab });
  close('cross_entropy.nograd', lossOnly, 'loss', 1e-4);
  exact('cross_entropy.nograd', { cpu: { logits }, cuda: { logits: lossOnly.cuda.logits as Float32Array } }, 'logits');
});

// ---- optimiser and reductions ----
gpuTest('adamw step (weight decay, bias correction at step 3)', () => {
  const g = rng(81);
  const n = 10001;
  const args = {
    n, param: g.f32(n), grad: g.f32(n, 0.1), m: g.f32(n, 0.01), v: Float32Array.from(g.f32(n, 0.01), (x) => x * x),
    lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 3,
  };
  const r = run('adamw_step', args);
  close('adamw_step', r, 'param', 1e-6);
  close('adamw_step', r, 'm', 1e-6);
  close('adamw_step', r, 'v', 1e-6);
});

gpuTest('sum_squares (double, deterministic)', () => {
  const g = rng(91);
  const x = g.f32(1_000_003);
  const r = run('sum_squares', { x });
  const a = r.cuda.value as number;
  const b = r.cpu.value as number;
  worst.set('sum_squares', Math.abs(a - b) / b);
  assert.ok(Math.abs(a - b) / b < 1e-12, `sum_squares ${a} vs ${b}`);
  assert.is(backendOp!('cuda', 'sum_squares', { x }).value, a, 'sum_squares is deterministic');
});

gpuTest('scale, axpy, add_row_bias, bias_backward', () => {
  const g = rng(101);
  const n = 12345;
  close('scale_inplace', run('scale_inplace', { x: g.f32(n), n, s: 0.37 }), 'x', 1e-6);
  close('axpy', run('axpy', { y: g.f32(n), x: g.f32(n), n, a: -1.7 }), 'y', 1e-6);
  const [rows, cols] = [1000, 77];
  close('add_row_bias', run('add_row_bias', { out: g.f32(rows * cols), bias: g.f32(cols), rows, cols }), 'out', 1e-6);
  close('bias_backward', run('bias_backward', { dy: g.f32(rows * cols), dbias: g.f32(cols), rows, cols }), 'dbias', 1e-6);
});

// ---- random ----
gpuTest('dropout masks and fills reproduce the CPU stream bit for bit', () => {
  const g = rng(111);
  const [rows, cols] = [33, 257];
  const x = g.f32(rows * cols);
  for (const seed of [0, 12345, 2n ** 40n + 7n]) {
    const r = run('dropout', { x, rows, cols, rowOffset: 5, p: 0.3, seed });
    const zc = (r.cuda.out as Float32Array).map((v) => (v === 0 ? 1 : 0));
    const zp = (r.cpu.out as Float32Array).map((v) => (v === 0 ? 1 : 0));
    assert.equal(zc, zp, 'dropout mask');
    close('dropout', r, 'out', 1e-6);
  }
  const n = 100_003;
  exact('fill_uniform', run('fill_uniform', { n, seed: 77, bound: 0.05 }), 'x');
  close('fill_normal', run('fill_normal', { n, seed: 78, std: 0.02, value: 0 }), 'x', 1e-6);
  exact('fill_normal.const', run('fill_normal', { n: 1000, seed: 1, std: 0, value: 1 }), 'x');
});

gpuTest('upload_converted: F32/BF16/F16 sources into f32 and bf16 storage, specials included', () => {
  const g = rng(121);
  const n = 70_001;
  const f = g.f32(n, 100);
  f[0] = NaN; f[1] = Infinity; f[2] = -Infinity; f[3] = 1e-40; f[4] = -0; f[5] = 3.4e38;
  const f16 = Uint16Array.from({ length: n }, () => Math.floor(g.u() * 65536));
  const bf = bf16Bits(f);
  const bytes = (a: Float32Array | Uint16Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  for (const [srcDtype, src] of [['F32', f], ['BF16', bf], ['F16', f16]] as const) {
    for (const to of ['f32', 'bf16']) {
      const r = run('upload_converted', { src: bytes(src), srcDtype, to, n });
      const a = r.cuda.dst as Float32Array | Uint16Array;
      const b = r.cpu.dst as Float32Array | Uint16Array;
      // Compare bit patterns (NaN payloads included).
      const bits = (x: Float32Array | Uint16Array) => (x instanceof Float32Array ? new Uint32Array(x.buffer) : x);
      assert.equal(bits(a), bits(b), `upload_converted ${srcDtype} -> ${to}`);
    }
  }
});

test('backendOp: cuda is either available or refused with a clear error; bad arguments are named', () => {
  if (skipReason) assert.match(skipReason, /no CUDA device: cudaGetDeviceCount returned|not available in this build|built without CUDA|no backendOp/);
  if (typeof backendOp !== 'function') return;
  assert.throws(() => backendOp('cpu', 'gemm', { N: 1, K: 1 }), /'M' must be a number/);
  assert.throws(() => backendOp('cpu', 'no_such_op', {}), /unknown op 'no_such_op'/);
  assert.throws(() => backendOp('tpu' as 'cpu', 'axpy', {}), /device 'tpu' is not available/);
  assert.throws(
    () => backendOp('cpu', 'axpy', { n: 10, y: new Float32Array(10), x: new Float32Array(3), a: 1 }),
    /'x' has 3 elements, needs 10/,
  );
});

test.after(() => {
  if (skipReason) return;
  const lines = [...worst.entries()].map(([k, v]) => `  ${k.padEnd(32)} ${v.toExponential(2)}`);
  console.log(`backend-parity: largest relative error per output (cuda vs cpu):\n${lines.join('\n')}`);
});

test.run();
