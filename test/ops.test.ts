// CPU kernels through opRun (native/addon/op_binding.cc).
//
// Oracles: central finite differences of the f64 kernels for every backward (objective
// sum(out * w) with random w, h = 1e-6); naive JS loops for GEMM and for the forwards; the f64
// kernels for the f32 ones (same inputs, rounded to f32 first); a hand-written PyTorch-semantics
// AdamW. Also: GEMM agreement across ISAs, bitwise determinism across thread counts, and argument
// checking.
//
// Tolerances: gradients 1e-6 of the largest |gradient| (f64, h = 1e-6); f32 against f64 as stated
// per test (relative to the largest |reference|); GEMM across ISAs 1e-5 of the norm.
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { native } from '../lib/native.js';
import { bf16Bits, fromBf16, toBf16 } from './helpers/bf16.js';
import { forEachIsa, keepingIsa, supportedIsas } from './helpers/isa.js';
import { rng } from './helpers/random.js';
import { forEachThreadCount, keepingThreads } from './helpers/threads.js';
import { withEnv } from '../lib/bench/env.js';

type F = Float32Array | Float64Array;
type Dtype = 'f32' | 'f64';
type Result = Record<string, F | number>;

const addon = native();

function op(name: string, dtype: Dtype, args: Record<string, unknown>): Result {
  return addon.opRun(name, dtype, args);
}
function arr(r: Result, key: string): F {
  const v = r[key];
  if (typeof v === 'number' || v === undefined) throw new Error(`output '${key}' missing`);
  return v;
}

/** Uniform in [-scale, scale), rounded to f32 so the f32 and f64 kernels see the same numbers. */
function rand(n: number, r: () => number, scale = 1): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.fround((r() * 2 - 1) * scale);
  return a;
}
const f32 = (a: ArrayLike<number>) => Float32Array.from(a);
const i32 = (a: number[]) => Int32Array.from(a);

/** max |a - b| / max |b| (the error relative to the reference's norm). */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.is(a.length, b.length, 'length');
  let d = 0;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    const e = Math.abs(x - y);
    if (!(e <= d)) d = Number.isNaN(e) ? Infinity : e;
    m = Math.max(m, Math.abs(y));
  }
  return m === 0 ? d : d / m;
}
function assertRel(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void {
  const e = relErr(a, b);
  assert.ok(e <= tol, `${what}: relative error ${e.toExponential(3)} > ${tol}`);
}
/** The first n of each of m rows ld apart, packed densely (a strided C's valid part). */
function denseRows(v: F, m: number, n: number, ld: number): Float32Array {
  const out = new Float32Array(m * n);
  for (let i = 0; i < m; i++) out.set(v.subarray(i * ld, i * ld + n), i * n);
  return out;
}

function sameBits(a: F, b: F, what: string): void {
  const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const y = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  assert.is(x.length, y.length, `${what}: length`);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) assert.unreachable(`${what}: bits differ at byte ${i}`);
}

// ---- finite differences ---------------------------------------------------------------------------

/**
 * Checks analytic gradients of `inputs` against central differences of
 * objective(inputs) = sum_o sum_i forward(inputs)[o][i] * weights[o][i]. `grads` gets the weights
 * (the output gradients) and returns the analytic gradient of each checked input. Checks every
 * element of inputs up to `maxChecks` elements, a seeded sample beyond.
 */
function gradCheck(
  what: string,
  inputs: Record<string, Float64Array>,
  forward: (x: Record<string, Float64Array>) => Float64Array[],
  grads: (x: Record<string, Float64Array>, w: Float64Array[]) => Record<string, Float64Array>,
  opts: { seed?: number; maxChecks?: number; h?: number; tol?: number } = {},
): void {
  const r = rng(opts.seed ?? 99);
  const h = opts.h ?? 1e-6;
  const tol = opts.tol ?? 1e-6;
  const outs = forward(inputs);
  const weights = outs.map((o) => rand(o.length, r));
  const objective = () => {
    let s = 0;
    forward(inputs).forEach((o, k) => {
      const w = weights[k]!;
      for (let i = 0; i < o.length; i++) s += o[i]! * w[i]!;
    });
    return s;
  };
  const analytic = grads(inputs, weights);
  for (const [name, g] of Object.entries(analytic)) {
    const x = inputs[name]!;
    assert.is(g.length, x.length, `${what}: d${name} length`);
    let gmax = 0;
    for (const v of g) gmax = Math.max(gmax, Math.abs(v));
    const n = x.length;
    const max = opts.maxChecks ?? 60;
    const idx = n <= max ? [...Array(n).keys()] : Array.from({ length: max }, () => Math.floor(r() * n));
    for (const i of idx) {
      const x0 = x[i]!;
      x[i] = x0 + h;
      const fp = objective();
      x[i] = x0 - h;
      const fm = objective();
      x[i] = x0;
      const num = (fp - fm) / (2 * h);
      const err = Math.abs(num - g[i]!);
      if (!(err <= tol * Math.max(1, gmax)))
        assert.unreachable(`${what}: d${name}[${i}] analytic ${g[i]} vs numeric ${num} (|g|max ${gmax})`);
    }
  }
}

const d64 = (r: Result, k: string) => arr(r, k) as Float64Array;

// ---- GEMM -----------------------------------------------------------------------------------------

interface GemmCase {
  M: number; N: number; K: number; transA: boolean; transB: boolean;
  lda: number; ldb: number; ldc: number; alpha: number; beta: number;
  A: Float64Array; B: Float64Array; C: Float64Array;
}

function gemmCase(M: number, N: number, K: number, transA: boolean, transB: boolean, r: () => number, pad = 0,
  alpha = 1, beta = 0): GemmCase {
  const lda = Math.max(1, (transA ? M : K) + pad), ldb = Math.max(1, (transB ? K : N) + pad), ldc = Math.max(1, N + pad);
  return {
    M, N, K, transA, transB, lda, ldb, ldc, alpha, beta,
    A: rand((transA ? K : M) * lda, r), B: rand((transB ? N : K) * ldb, r), C: rand(M * ldc, r),
  };
}

function gemmNaive(c: GemmCase, B = c.B): Float64Array {
  const out = Float64Array.from(c.C);
  for (let i = 0; i < c.M; i++) {
    for (let j = 0; j < c.N; j++) {
      let s = 0;
      for (let k = 0; k < c.K; k++) {
        const a = c.transA ? c.A[k * c.lda + i]! : c.A[i * c.lda + k]!;
        const b = c.transB ? B[j * c.ldb + k]! : B[k * c.ldb + j]!;
        s += a * b;
      }
      out[i * c.ldc + j] = c.alpha * s + (c.beta === 0 ? 0 : c.beta * c.C[i * c.ldc + j]!);
    }
  }
  return out;
}

function gemmRun(c: GemmCase, dtype: Dtype, extra: Record<string, unknown> = {}): F {
  const conv = dtype === 'f32' ? f32 : (a: Float64Array) => a;
  return arr(op('gemm', dtype, {
    M: c.M, N: c.N, K: c.K, transA: c.transA, transB: c.transB, lda: c.lda, ldb: c.ldb, ldc: c.ldc,
    alpha: c.alpha, beta: c.beta, A: conv(c.A), B: conv(c.B), C: conv(c.C), ...extra,
  }), 'C');
}

const ORIENTS: [boolean, boolean][] = [[false, false], [false, true], [true, false], [true, true]];

/**
 * fn on every ISA and on 1, 2 and 3 threads with SEALKIT_AMX=0, so that the packed-weight paths run
 * on the vdpbf16ps kernel wherever the CPU has AVX512-BF16; then, where it has AMX, on AMX tiles
 * (avx512bf16, 1-3 threads), whose packed weights hold whole blocks of 16 pairs.
 */
function forEachIsaAndThreadsOnPackedWeights(fn: (isa: string, threads: number, kernel: 'vdpbf16ps' | 'amx') => void): void {
  withEnv({ SEALKIT_AMX: '0' }, () => keepingThreads(() => forEachIsa((isa) => {
    for (const threads of [1, 2, 3]) {
      addon.setThreads(threads);
      fn(isa, threads, 'vdpbf16ps');
    }
  })));
  if (!addon.info().amx) return;
  keepingIsa(() => forEachThreadCount([1, 2, 3], (threads) => {
    addon.setIsa('avx512bf16');
    fn('avx512bf16', threads, 'amx');
  }));
}

test('gemm: all orientations against a naive loop, f64 and f32', () => {
  const r = rng(1);
  for (const [ta, tb] of ORIENTS) {
    for (const [M, N, K] of [[1, 1, 1], [5, 7, 3], [33, 65, 17], [70, 40, 300]] as const) {
      const c = gemmCase(M, N, K, ta, tb, r, 3, 0.75, 0.5);
      const ref = gemmNaive(c);
      assertRel(gemmRun(c, 'f64'), ref, 1e-13, `f64 ${M}x${N}x${K} tA=${ta} tB=${tb}`);
      assertRel(gemmRun(c, 'f32'), ref, 1e-5, `f32 ${M}x${N}x${K} tA=${ta} tB=${tb}`);
    }
  }
});

test('gemm: beta = 0 ignores NaN in C, K = 0 scales C, padding columns untouched', () => {
  const r = rng(2);
  for (const dtype of ['f32', 'f64'] as const) {
    const c = gemmCase(9, 20, 13, false, true, r, 4);
    c.C.fill(NaN);
    for (let i = 0; i < c.M; i++) for (let j = c.N; j < c.ldc; j++) c.C[i * c.ldc + j] = 7;
    const out = gemmRun(c, dtype);
    const ref = gemmNaive({ ...c, C: new Float64Array(c.C.length) });
    for (let i = 0; i < c.M; i++) {
      for (let j = 0; j < c.ldc; j++) {
        const v = out[i * c.ldc + j]!;
        if (j >= c.N) assert.is(v, 7, `${dtype}: padding column`);
        else assert.ok(Math.abs(v - ref[i * c.ldc + j]!) < 1e-4, `${dtype}: C[${i},${j}] = ${v}`);
      }
    }
    const k0 = gemmCase(4, 5, 0, false, false, r, 0, 1, 0.5);
    assertRel(gemmRun(k0, dtype), k0.C.map((x) => x * 0.5), 1e-7, `${dtype}: K = 0`);
    const k0z = gemmCase(4, 5, 0, false, false, r, 0, 1, 0);
    k0z.C.fill(NaN);
    assert.equal(Array.from(gemmRun(k0z, dtype)), new Array(20).fill(0), `${dtype}: K = 0, beta = 0`);
  }
});

/** The case with op(A) rounded to bf16: what a bf16-B GEMM multiplies under avx512bf16. */
function roundA(c: GemmCase): GemmCase {
  return { ...c, A: Float64Array.from(c.A, (x) => fromBf16(toBf16(x))) };
}
/** The f64 reference for bf16 B under the active ISA: avx512bf16 multiplies in bf16 (vdpbf16ps), */
/** rounding A to bf16 as PyTorch's bf16 autocast does; the other ISAs widen B and multiply in f32. */
function gemmNaiveBf16(c: GemmCase, bits: Uint16Array, isa = addon.info().isa): Float64Array {
  return gemmNaive(isa === 'avx512bf16' ? roundA(c) : c, Float64Array.from(bits, fromBf16));
}

test('gemm: bf16 B matches f64 on the widened weights', () => {
  const r = rng(3);
  for (const [ta, tb] of ORIENTS) {
    const c = gemmCase(37, 70, 45, ta, tb, r, 2, 1.5, 0.25);
    const bits = bf16Bits(c.B);
    const out = gemmRun(c, 'f32', { B: bits, bDtype: 'bf16' });
    assertRel(out, gemmNaiveBf16(c, bits), 1e-5, `bf16 tA=${ta} tB=${tb}`);
  }
});

test('gemm: a last row strip of every height, every ISA', () => {
  // The AVX-512 kernel runs a GEMM's last, partial strip of 14 rows through a kernel of just its
  // rows (M mod 14 = 1..13; the first strip is the partial one below 14), the others on zero padding.
  const r = rng(22);
  forEachIsa((isa) => {
    for (let M = 1; M <= 29; M++) {
      for (const [ta, tb] of [[false, false], [true, true]] as const) {
        const c = gemmCase(M, 45, 37, ta, tb, r, 1, 0.75, 0.5);
        const bits = bf16Bits(c.B);
        assertRel(gemmRun(c, 'f32'), gemmNaive(c), 1e-5, `${isa} f32 M${M} tA=${ta} tB=${tb}`);
        assertRel(gemmRun(c, 'f32', { B: bits, bDtype: 'bf16' }), gemmNaiveBf16(c, bits, isa), 1e-5,
          `${isa} bf16 M${M} tA=${ta} tB=${tb}`);
      }
    }
  });
});

test('gemm with a low-rank update: the bits of the two separate calls, every ISA', () => {
  // C = alpha op(A) op(B) + beta C, then C += s U op(V): fused onto the tiles on the packed AVX-512
  // paths, two calls elsewhere. Either way the result must be the separate calls' bits.
  const r = rng(21);
  forEachIsa((isa) => {
    // 20x40x2600: a K long enough to run in slabs (the update rides on the last one).
    for (const [M, N, K, rank] of [[3, 33, 24, 4], [5, 100, 301, 16], [17, 7, 64, 1], [45, 70, 577, 16], [100, 200, 96, 8], [20, 40, 2600, 16]] as const) {
      for (const tb of [false, true]) {
        for (const transV of [false, true]) {
          for (const bDtype of ['f32', 'bf16'] as const) {
            const c = gemmCase(M, N, K, false, tb, r, 3, 1, transV ? 0 : 0.5);
            const ldu = rank + 2, ldv = (transV ? rank : N) + 1;
            const U = f32(rand(M * ldu, r)), V = f32(rand((transV ? N : rank) * ldv, r));
            const B = bDtype === 'bf16' ? bf16Bits(c.B) : f32(c.B);
            const base = gemmRun(c, 'f32', { B, bDtype });
            const separate = arr(op('gemm', 'f32', {
              M, N, K: rank, A: U, lda: ldu, B: V, ldb: ldv, transB: transV, C: Float32Array.from(base), ldc: c.ldc,
              alpha: 0.75, beta: 1,
            }), 'C');
            const fused = gemmRun(c, 'f32', { B, bDtype, U, V, rank, transV, ldu, ldv, updateScale: 0.75 });
            const what = `${isa} ${bDtype} ${M}x${N}x${K} r${rank} tB=${tb} tV=${transV}`;
            assert.equal(bitsOf(fused), bitsOf(separate), what);
            // ...and the update is really there.
            let moved = 0;
            for (let i = 0; i < M * c.ldc; i++) if (fused[i] !== base[i]) moved++;
            assert.ok(moved > (M * N) / 2, `${what}: update applied`);
          }
        }
      }
    }
  });
});

test('gemm_group: the bits of the GEMMs one by one, every ISA, f32 and bf16 weights', () => {
  // Decoding's q, k, v (and gate, up) run as one dispatch over all their weight rows; the chunks
  // then straddle the weights' boundaries, which must not change a single bit.
  const r = rng(22);
  forEachIsa((isa) => {
    for (const [M, K, Ns] of [[1, 576, [576, 192, 192]], [3, 77, [130, 5, 66]], [8, 64, [1536, 1536]], [16, 40, [1, 2, 3, 250]], [17, 33, [70, 70]]] as const) {
      for (const bDtype of ['f32', 'bf16'] as const) {
        const A = f32(rand(M * K, r));
        const Ws = Ns.map((N) => (bDtype === 'bf16' ? bf16Bits(rand(N * K, r)) : f32(rand(N * K, r))));
        const args: Record<string, unknown> = { M, K, A, n: Ns.length, bDtype };
        Ns.forEach((N, i) => { args[`N${i}`] = N; args[`B${i}`] = Ws[i]; });
        const group = op('gemm_group', 'f32', args);
        Ns.forEach((N, i) => {
          const one = arr(op('gemm', 'f32', { M, N, K, A, B: Ws[i], bDtype, transB: true }), 'C');
          assert.equal(bitsOf(arr(group, `C${i}`)), bitsOf(one), `${isa} ${bDtype} M${M} K${K} W${i} of [${Ns}]`);
        });
      }
    }
  });
});

// Scoring's q, k, v: many rows of GEMMs of one x whose bf16 weights come packed run as one packed GEMM
// across their N's (native/cpu/gemm.cc, packed_group), each tile stored to its own GEMM's C. The
// bits must be those of each GEMM alone on every path (shared packing, task-packed A rows, task-
// packed B strips), with a last part of partial strips, and where the group does not apply
// (a part that is not whole strips, few rows, K slabs) the calls one by one; 1-3 threads.
test('gemm_group: weights packed ahead run as one GEMM across their columns with the bits of each alone', () => {
  const r = rng(34);
  const cases: [number, number, number[]][] = [
    // Grouped: shared packing (1000 x 576, last part partial), task-packed A rows, task-packed B strips.
    [1000, 576, [576, 192, 100]], [600, 64, [64, 64, 96]], [20, 70, [256, 320, 100]], [90, 128, [96, 64, 64, 200]],
    // One by one: a first part of partial strips, few rows, K in slabs, a part narrow enough for the
    // low-rank kernels.
    [90, 128, [100, 64]], [12, 64, [64, 64]], [40, 2100, [64, 64]], [60, 64, [64, 32]],
  ];
  forEachIsaAndThreadsOnPackedWeights((isa, threads, kernel) => {
    for (const [M, K, Ns] of cases) {
      const A = f32(rand(M * K, r));
      const Ws = Ns.map((N) => bf16Bits(rand(N * K, r)));
      const args: Record<string, unknown> = { M, K, A, n: Ns.length, bDtype: 'bf16', packedB: true };
      Ns.forEach((N, i) => { args[`N${i}`] = N; args[`B${i}`] = Ws[i]; });
      const group = op('gemm_group', 'f32', args);
      Ns.forEach((N, i) => {
        const one = arr(op('gemm', 'f32', { M, N, K, A, B: Ws[i], bDtype: 'bf16', transB: true, packedB: true }), 'C');
        sameBits(arr(group, `C${i}`), one, `${isa} ${kernel} threads=${threads} M${M} K${K} W${i} of [${Ns}]`);
      });
    }
  });
});

// LoRA's side paths of one input run as one pass over the shared operand (native/cpu/gemm_lowrank.cc
// gemm_lowrank_group): xa_i = x A_i^T for q, k, v (or gate, up) share x; dA_i += dxa_i^T x share x as
// B. Whatever runs them, the bits are those of the GEMMs one by one: ranks around the vector edges,
// token counts across the outer sums' 64-token blocks, alpha/beta onto an existing C, bf16 B, and
// groups the pass does not take (ranks over 16, a B not shared) falling back call by call.
test('gemm_group: LoRA xa and dA groups give the bits of the GEMMs one by one, every ISA', () => {
  const r = rng(23);
  type Call = Record<string, unknown>;
  const check = (calls: Call[], what: string, isa: string) => {
    const group = op('gemm_group', 'f32', { calls });
    calls.forEach((c, i) => {
      const one = arr(op('gemm', 'f32', c), 'C');
      assert.equal(bitsOf(arr(group, `C${i}`)), bitsOf(one), `${isa} ${what}: GEMM ${i}`);
    });
  };
  forEachIsa((isa) => {
    // xa = x A^T: x [T, K] shared, A_i [r_i, K] (f32, or bf16 where a model stores it so).
    for (const [T, K, ranks] of [[75, 40, [16, 16, 16]], [300, 128, [16, 8]], [9, 33, [1, 16, 5]], [64, 577, [16, 16]], [40, 64, [17, 16]]] as const) {
      for (const bDtype of ['f32', 'bf16'] as const) {
        const A = f32(rand(T * K, r));
        const calls = ranks.map((N, i) => ({
          M: T, N, K, A, transB: true, bDtype,
          B: bDtype === 'bf16' ? bf16Bits(rand(N * K, r)) : f32(rand(N * K, r)),
          ldc: i === 1 ? N + 3 : N, alpha: i === 2 ? 0.5 : 1,
        }));
        check(calls, `xa T${T} K${K} ranks [${ranks}] ${bDtype}`, isa);
      }
    }
    // dA += dxa^T x: dxa_i [T, r_i] (transA), x [T, in] shared as B; beta 1 onto a gradient.
    for (const [T, IN, ranks] of [[75, 100, [16, 16, 16]], [300, 130, [16, 8]], [257, 40, [1, 5, 16, 32]], [129, 576, [16, 16]]] as const) {
      for (const bDtype of ['f32', 'bf16'] as const) {
        const B = bDtype === 'bf16' ? bf16Bits(rand(T * IN, r)) : f32(rand(T * IN, r));
        const calls = ranks.map((M, i) => ({
          M, N: IN, K: T, A: f32(rand(T * M, r)), transA: true, B, bDtype,
          beta: 1, C: f32(rand(M * IN, r)), alpha: i === 0 ? 1 : 0.25,
        }));
        check(calls, `dA T${T} in ${IN} ranks [${ranks}] ${bDtype}`, isa);
      }
    }
    // Not one pass: B not shared (the weight gradients of different inputs).
    const T = 50, IN = 70;
    const calls = [0, 1].map(() => ({ M: 16, N: IN, K: T, A: f32(rand(T * 16, r)), transA: true, B: f32(rand(T * IN, r)), beta: 1, C: f32(rand(16 * IN, r)) }));
    check(calls, 'dA with two inputs', isa);
  });
});

// A batch that mixes adapters runs each sequence's LoRA products as one chain on one thread, the
// chains spread over the pool (native/cpu/gemm_chains.cc). Whatever runs them, every C must hold
// the bits of its GEMM run alone: the backward pass's chains (dB, dxa, dA, dx onto existing
// gradients, alpha and beta) and the forward pass's (xa, y += s xa B^T), sequences of different
// lengths (1 to 130 tokens), 1-3 threads, every ISA. `chained` says which way they ran: one per
// task on several threads where that pays, call by call on one thread, for a few large chains
// (where it would leave a thread idle) and under SEALKIT_GEMM_CHAINS=0.
test('gemm_chains: each chain on one thread, the bits of the GEMMs one by one', () => {
  const r = rng(41);
  type Call = Record<string, unknown>;
  const backwardChain = (rows: number, inW: number, out: number, rank: number): Call[] => [
    { M: out, N: rank, K: rows, A: f32(rand(rows * out, r)), transA: true, B: f32(rand(rows * rank, r)), C: f32(rand(out * rank, r)), alpha: 2, beta: 1 },
    { M: rows, N: rank, K: out, A: f32(rand(rows * out, r)), B: f32(rand(out * rank, r)), alpha: 2 },
    { M: rank, N: inW, K: rows, A: f32(rand(rows * rank, r)), transA: true, B: f32(rand(rows * inW, r)), C: f32(rand(rank * inW, r)), beta: 1 },
    { M: rows, N: inW, K: rank, A: f32(rand(rows * rank, r)), B: f32(rand(rank * inW, r)), C: f32(rand(rows * inW, r)), beta: 1 },
  ];
  const forwardChain = (rows: number, inW: number, out: number, rank: number): Call[] => [
    { M: rows, N: rank, K: inW, A: f32(rand(rows * inW, r)), B: f32(rand(rank * inW, r)), transB: true, ldc: rank + 3 },
    { M: rows, N: out, K: rank, A: f32(rand(rows * rank, r)), B: f32(rand(out * rank, r)), transB: true, C: f32(rand(rows * out, r)), alpha: 0.5, beta: 1 },
  ];
  const check = (calls: Call[], chainLen: number, chained: boolean, what: string) => {
    const res = addon.opRun('gemm_chains', 'f32', { calls, chainLen }) as Record<string, F | boolean>;
    assert.is(res.chained, chained, `${what}: chained`);
    calls.forEach((c, i) => {
      assert.equal(bitsOf(res[`C${i}`] as F), bitsOf(arr(op('gemm', 'f32', c), 'C')), `${what}: GEMM ${i}`);
    });
  };
  const lengths = [64, 1, 17, 130, 64, 33, 64, 8];
  forEachIsa((isa) => {
    forEachThreadCount([1, 2, 3], (threads) => {
      const what = `${isa} ${threads} threads`;
      check(lengths.flatMap((n, i) => backwardChain(n, i % 2 ? 40 : 128, i % 3 ? 128 : 384, i % 4 ? 16 : 8)), 4, threads > 1, `${what} backward`);
      check(lengths.flatMap((n, i) => forwardChain(n, i % 2 ? 40 : 128, i % 3 ? 128 : 384, 16)), 2, threads > 1, `${what} forward`);
      check(forwardChain(20, 128, 128, 16), 2, false, `${what} one chain`);
      // Three large products on two threads: one per task would leave a thread idle for a third.
      if (threads === 2) {
        const big = () => ({ M: 256, N: 256, K: 256, A: f32(rand(256 * 256, r)), B: f32(rand(256 * 256, r)), transB: true });
        check([big(), big(), big()], 1, false, `${what} three large`);
      }
    });
  });
  keepingThreads(() => {
    addon.setThreads(2);
    const calls = lengths.flatMap((n) => forwardChain(n, 128, 128, 16));
    withEnv({ SEALKIT_GEMM_CHAINS: '0' }, () => check(calls, 2, false, 'SEALKIT_GEMM_CHAINS=0'));
  });
});

// ThreadPool::run (native/core/threadpool.cc): each thread claims from its own range of the tasks,
// then from the back of the others' (runs of over 65,535 tasks per thread: from one shared counter);
// every claim word carries the run's generation; no lock on the way; workers spin ~50 us between
// runs, then sleep until woken.
type PoolRuns = { counts: Float64Array; threads: number; errors: number; message: string };
const poolRuns = (args: Record<string, unknown>) => addon.opRun('pool_runs', 'f32', args) as unknown as PoolRuns;

test('thread pool: every task of every run exactly once, back to back and after sleeping', () => {
  forEachThreadCount([1, 2, 3, 5], (threads) => {
    // 131,070 tasks on 2 threads are the largest owned ranges (65,535 each); one more takes the
    // shared counter.
    for (const [runs, tasks, gapMicros] of [[5000, 2, 0], [3000, 8, 0], [500, 33, 0], [30, 8, 300], [20, 3, 2000],
      [3, 131070, 0], [3, 131071, 0], [2, 400000, 0]] as const) {
      const tag = `threads=${threads} runs=${runs} tasks=${tasks} gap=${gapMicros}us`;
      const p = poolRuns({ runs, tasks, gapMicros });
      assert.is(p.errors, 0, tag);
      assert.ok(p.counts.every((c) => c === runs), `${tag}: counts ${Array.from(p.counts).slice(0, 8)}`);
      assert.ok(p.threads >= 1 && p.threads <= threads, `${tag}: ${p.threads} threads ran tasks`);
    }
  });
});

test('thread pool: a throwing task fails its run only; the pool goes on', () => {
  forEachThreadCount([1, 2, 3], (threads) => {
    const runs = 200, tasks = 16;
    const p = poolRuns({ runs, tasks, throwRun: 100, throwTask: 5 });
    assert.is(p.errors, 1, `threads=${threads}`);
    assert.is(p.message, 'task 5 failed', `threads=${threads}`);
    // Tasks of the failing run claimed after the failure are skipped; every other run ran them all.
    for (let t = 0; t < tasks; t++) assert.ok(p.counts[t]! >= runs - 1 && p.counts[t]! <= runs, `threads=${threads}: task ${t} ran ${p.counts[t]} times`);
    assert.is(p.counts[5], runs, `threads=${threads}: the throwing task itself ran`);
  });
});

// JobThreading (native/engine/job_threading.h): whether a model job runs its kernels on the pool or
// inline, from the times of the jobs before it. Fed synthetic times: job i takes inlineMs[i] if run
// inline, else pooledMs[i].
// Weights' packed and coded copies (native/core/huge_pages.h): cut from shared slabs of huge pages,
// each slab freed with its last block; with SEALKIT_HUGE_PAGES=0 every block is its own allocation.
type SlabStats = { slabs: number; bytes: number; blocks: number };
type WeightBlocks = {
  before: SlabStats; allocated: SlabStats; freed: SlabStats; aligned: boolean; largeAligned: boolean; intact: boolean;
  hugePages: boolean; slabBytes: number; blockMax: number;
};
const weightBlocks = (sizes: number[], freeOrder: number[]) =>
  addon.opRun('weight_blocks', 'f32', { sizes: Int32Array.from(sizes), freeOrder: Int32Array.from(freeOrder) }) as unknown as WeightBlocks;

test('weight blocks: shared slabs, aligned, disjoint, each slab freed with its last block', () => {
  // Odd sizes (not multiples of 64), a block of exactly the per-block slab limit and one past it,
  // and enough small ones to fill a shared slab and open another.
  const MiB = 1 << 20;
  const sizes = [1, 63, 65, 32768, 1769472, 4 * MiB, 4 * MiB + 1, 1000, ...Array.from({ length: 40 }, (_, i) => 900000 + 4093 * i)];
  const n = sizes.length;
  const small = sizes.filter((b) => b < 4 * MiB).reduce((a, b) => a + b, 0);
  // Frees interleaved from both ends, so slabs empty in an order unlike their filling.
  const order = Array.from({ length: n }, (_, i) => (i % 2 ? n - 1 - (i >> 1) : i >> 1));
  const r = withEnv({ SEALKIT_HUGE_PAGES: '' }, () => weightBlocks(sizes, order));
  assert.ok(r.hugePages);
  assert.is(r.blockMax, 4 * MiB);
  assert.ok(r.aligned && r.largeAligned && r.intact, JSON.stringify(r));
  assert.is(r.allocated.blocks - r.before.blocks, n);
  // Two large blocks on slabs of their own; the small ones share one or two new slabs per 32 MiB.
  const added = r.allocated.slabs - r.before.slabs;
  assert.ok(added >= 2 + Math.floor(small / r.slabBytes) && added <= 2 + Math.ceil(small / r.slabBytes) + 1, `${added} slabs for ${n} blocks`);
  assert.equal(r.freed, r.before);

  const off = withEnv({ SEALKIT_HUGE_PAGES: '0' }, () => weightBlocks(sizes, order));
  assert.not.ok(off.hugePages);
  assert.ok(off.aligned && off.intact);
  assert.is(off.allocated.slabs - off.before.slabs, n, 'one allocation per block with the advice off');
  assert.equal(off.freed, off.before);

  assert.throws(() => weightBlocks([64, 64], [0, 0]), /freeOrder/);
  assert.throws(() => weightBlocks([0], [0]), /sizes/);
});

type PolicyRun = { inline: Int32Array; inlineNow: boolean; inlineJobs: number };
const policyRun = (tokens: number, pooled: (i: number) => number, inlined: (i: number) => number, jobs: number) =>
  addon.opRun('job_threading_policy', 'f32', {
    tokens,
    pooledMs: Float32Array.from({ length: jobs }, (_, i) => pooled(i)),
    inlineMs: Float32Array.from({ length: jobs }, (_, i) => inlined(i)),
  }) as unknown as PolicyRun;
const inlineShare = (r: PolicyRun, from: number, to: number) => r.inline.slice(from, to).reduce((a, b) => a + b, 0) / (to - from);

test('job threading: the faster way wins, the other is tried ever more rarely, the warm-up job is ignored', () => {
  // The pool faster (2 threads sharing a cache): after the first job (50 ms, a warm-up) and 3 pooled
  // jobs, 3 inline trials, then inline tries at doubling intervals up to every 128 jobs.
  const pooled = policyRun(64, (i) => (i === 0 ? 50 : 1.0), () => 1.45, 2000);
  assert.equal(Array.from(pooled.inline.slice(0, 7)), [0, 0, 0, 0, 1, 1, 1]);
  assert.is(pooled.inlineNow, false);
  assert.ok(inlineShare(pooled, 1000, 2000) <= 10 / 1000, `inline share ${inlineShare(pooled, 1000, 2000)}`);
  assert.ok(inlineShare(pooled, 1000, 2000) > 0, 'the other way is still tried now and then');
  // Inline faster (vCPUs on cores that share no cache): nearly every job inline.
  const inlined = policyRun(64, () => 2.2, () => 1.7, 2000);
  assert.is(inlined.inlineNow, true);
  assert.ok(inlineShare(inlined, 100, 2000) > 0.98, `inline share ${inlineShare(inlined, 100, 2000)}`);
});

test('job threading: follows the machine when the faster way changes, within a probe interval', () => {
  // Jobs 0-999: pool faster; 1000-1999: inline faster; 2000-2999: pool faster again.
  const phase = (i: number) => Math.floor(i / 1000) % 2;
  const r = policyRun(64, (i) => (phase(i) ? 2.2 : 1.0), (i) => (phase(i) ? 1.7 : 1.5), 3000);
  // Pooled jobs turn slow: their window fills with slow times within a few jobs.
  assert.ok(inlineShare(r, 1010, 2000) > 0.98, `after the first change: ${inlineShare(r, 1010, 2000)}`);
  // Inline chosen, the pool turns fast: found at the next try (at most 128 jobs on), then tried
  // again at once until its window agrees.
  assert.ok(inlineShare(r, 2140, 3000) < 0.02, `after the second change: ${inlineShare(r, 2140, 3000)}`);
  assert.is(r.inlineNow, false);
  // Times that jitter around each other (a near-tie) do not make the policy flap every job.
  const noisy = policyRun(64, (i) => 1.0 + 0.3 * Math.sin(i * 1.7), (i) => 1.0 + 0.3 * Math.cos(i * 2.3), 2000);
  let switches = 0;
  for (let i = 1; i < 2000; i++) if (noisy.inline[i] !== noisy.inline[i - 1]) switches++;
  assert.ok(switches < 300, `${switches} switches`);
  // A pool with a tail (every tenth job 3x slower) stays chosen over a steady way 25 % slower:
  // ways are compared by the fast end of their recent times.
  const tail = policyRun(64, (i) => (i % 10 === 0 ? 3 : 1), () => 1.25, 2000);
  assert.ok(tail.inlineJobs <= 40, `${tail.inlineJobs} inline jobs`);
});

test('job threading: jobs that take 3 ms or more on the pool are never tried inline', () => {
  for (const ms of [3, 6]) assert.is(policyRun(1024, () => ms, () => 1, 500).inlineJobs, 0, `${ms} ms`);  // even if inline would be faster
  // 2.5 ms per job on the pool is small enough to try.
  assert.ok(policyRun(256, () => 2.5, () => 2, 100).inlineNow);
});

// parallel_streams (native/core/threadpool.cc) hands decoding's weight rows out: each thread walks
// its own contiguous range front to back, then takes chunks from the back of the others'.
type StreamChunks = { begin: Float64Array; end: Float64Array; runEnd: Float64Array; continues: Int32Array; thread: Int32Array };
const streamChunks = (args: Record<string, unknown>) => addon.opRun('stream_chunks', 'f32', args) as unknown as StreamChunks;

test('parallel_streams: every item exactly once, in aligned chunks, on any thread count', () => {
  forEachThreadCount([1, 2, 3, 5], (threads) => {
    for (const [n, grain] of [[0, 64], [1, 64], [63, 64], [64, 64], [65, 64], [960, 64], [1000, 64], [7, 1], [130, 3]] as const) {
      const tag = `n=${n} grain=${grain} threads=${threads}`;
      const c = streamChunks({ n, grain });
      const seen = new Uint8Array(n);
      const last = new Map<number, { end: number; runEnd: number }>();
      for (let i = 0; i < c.begin.length; i++) {
        const [b, e, runEnd] = [c.begin[i]!, c.end[i]!, c.runEnd[i]!];
        assert.ok(b < e && e <= n && b % grain === 0 && (e - b === grain || e === n), `${tag}: chunk [${b}, ${e})`);
        assert.ok(runEnd >= e && runEnd <= n, `${tag}: run end ${runEnd} of [${b}, ${e})`);
        // A chunk continues exactly when its thread's previous chunk ended at its begin and that
        // chunk's run went on past it.
        const prev = last.get(c.thread[i]!);
        assert.is(c.continues[i] === 1, prev !== undefined && prev.end === b && prev.runEnd > b, `${tag}: continues flag of [${b}, ${e})`);
        last.set(c.thread[i]!, { end: e, runEnd });
        for (let j = b; j < e; j++) seen[j]!++;
      }
      assert.ok(seen.every((x) => x === 1), `${tag}: some item not run exactly once`);
    }
  });
});

test('parallel_streams: a slow thread hands the tail of its range to the others', () => {
  forEachThreadCount([2, 3], (threads) => {
    // The chunk holding item 0 sleeps 200 ms: the other threads finish their own ranges long before
    // and must take range 0's later chunks from its back. (Which thread ran chunk 0 is not fixed:
    // with more threads than cores the pool's thread 0 can start late, and another thread may then
    // have taken all of range 0 from the back, chunk 0 last.)
    const n = 1024, grain = 64;
    const c = streamChunks({ n, grain, slowItem: 0, slowMicros: 200000 });
    const rangeEnd = Math.floor((n / grain) / threads) * grain;
    let stolen = 0;
    for (let i = 0; i < c.begin.length; i++) {
      if (c.begin[i] === 0 || c.begin[i]! >= rangeEnd) continue;
      // Walked front to back behind the slow chunk, a chunk would continue its run past its end.
      assert.is(c.runEnd[i], c.end[i], `threads=${threads}: range 0's chunk at ${c.begin[i]} was not taken from the back`);
      assert.is(c.continues[i], 0, `threads=${threads}: a stolen chunk continues nothing`);
      stolen++;
    }
    assert.is(stolen, rangeEnd / grain - 1, `threads=${threads}: chunks of the slow range taken over`);
  });
});

test('decoding\'s prefetch: the CPU\'s default (the hint on AMD Zen 5 only), SEALKIT_FEW_ROWS_NTA=1|0 forces either', () => {
  const { cpu, decodePrefetch } = addon.info();
  assert.ok(['amd', 'intel', 'other'].includes(cpu.vendor), `vendor ${cpu.vendor}`);
  // The kernel's own reading of CPUID (Linux, x86): family and model as the engine decodes them.
  const cpuinfo = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
  const field = (name: string) => cpuinfo.match(new RegExp(`^${name}\\s*:\\s*(\\d+)`, 'm'))?.[1];
  if (field('cpu family') !== undefined) {
    assert.is(cpu.family, Number(field('cpu family')), 'family as /proc/cpuinfo has it');
    assert.is(cpu.model, Number(field('model')), 'model as /proc/cpuinfo has it');
  }
  const zen5OrLater = cpu.vendor === 'amd' && cpu.family >= 0x1a;
  withEnv({ SEALKIT_FEW_ROWS_NTA: '' }, () => assert.is(addon.info().decodePrefetch, zen5OrLater ? 'nta' : 'l2'));
  assert.is(withEnv({ SEALKIT_FEW_ROWS_NTA: '1' }, () => addon.info().decodePrefetch), 'nta');
  assert.is(withEnv({ SEALKIT_FEW_ROWS_NTA: '0' }, () => addon.info().decodePrefetch), 'l2');
  assert.is(addon.info().decodePrefetch, decodePrefetch, 'the setting is read per call, not kept');
});

test('AMX: info says whether bf16 GEMMs and batched decoding run on tiles; SEALKIT_AMX=0 and SEALKIT_AMX_FEW_ROWS=0 turn them off', () => {
  const cpuinfo = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
  const flags = new Set(cpuinfo.match(/^flags\s*:(.*)$/m)?.[1]?.trim().split(/\s+/) ?? []);
  const bf16 = addon.info().isa === 'avx512bf16';
  // Linux lists amx_tile only where it grants the tile state, which the engine then asks for.
  if (flags.size > 0) assert.is(addon.info().amx, bf16 && flags.has('amx_bf16') && flags.has('amx_tile'), 'AMX as /proc/cpuinfo has it');
  assert.is(addon.info().decodeRowsOnAmx, addon.info().amx, 'batched decoding follows the tiles by default');
  withEnv({ SEALKIT_AMX: '0' }, () => {
    assert.is(addon.info().amx, false, 'SEALKIT_AMX=0');
    assert.is(addon.info().decodeRowsOnAmx, false, 'SEALKIT_AMX=0: no tiles for decoding either');
  });
  withEnv({ SEALKIT_AMX_FEW_ROWS: '0' }, () => assert.is(addon.info().decodeRowsOnAmx, false, 'SEALKIT_AMX_FEW_ROWS=0'));
  if (!addon.info().decodeRowsOnAmx) return;
  // Where the tiles run, the switch really moves 8 rows of y = x W^T between two kernels: both within
  // the bf16 contract of f64 on the rounded x, with different bits (their sums run in different orders).
  const r = rng(27);
  const c = gemmCase(8, 200, 300, false, true, r, 3, 1, 0);
  const bits = bf16Bits(c.B);
  const tiles = gemmRun(c, 'f32', { B: bits, bDtype: 'bf16' });
  const dots = withEnv({ SEALKIT_AMX_FEW_ROWS: '0' }, () => gemmRun(c, 'f32', { B: bits, bDtype: 'bf16' }));
  const ref = gemmNaiveBf16(c, bits, 'avx512bf16');
  assertRel(tiles, ref, 1e-5, 'AMX rows');
  assertRel(dots, ref, 1e-5, 'vdpbf16ps rows');
  assert.not.equal(bitsOf(tiles), bitsOf(dots), 'the two kernels ran');
});

test('few-rows GEMMs (decoding): the same bits on 1, 2, 3 and 5 threads and with either prefetch, every ISA', () => {
  // The rows are split by parallel_streams; where a chunk falls (and which thread prefetched what,
  // how far ahead, with which hint: SEALKIT_FEW_ROWS_NTA) must not change a bit. 3 and 5 threads on
  // a smaller machine also exercise the stealing.
  const r = rng(23);
  const K = 100;
  const cases = [[1, 'bf16'], [8, 'bf16'], [16, 'bf16'], [1, 'f32'], [4, 'f32']] as const;
  const inputs = cases.map(([M, bDtype]) => {
    const N = 1000;
    const A = f32(rand(M * K, r));
    const B = bDtype === 'bf16' ? bf16Bits(rand(N * K, r)) : f32(rand(N * K, r));
    return { M, N, A, B, bDtype };
  });
  const groupNs = [576, 192, 192];
  const groupArgs: Record<string, unknown> = { M: 8, K, A: f32(rand(8 * K, r)), n: groupNs.length, bDtype: 'bf16' };
  groupNs.forEach((N, i) => { groupArgs[`N${i}`] = N; groupArgs[`B${i}`] = bf16Bits(rand(N * K, r)); });
  const runAll = () => [
    ...inputs.map(({ M, N, A, B, bDtype }) => arr(op('gemm', 'f32', { M, N, K, A, B, bDtype, transB: true }), 'C')),
    ...groupNs.map((_, i) => arr(op('gemm_group', 'f32', groupArgs), `C${i}`)),
  ];
  forEachIsa((isa) => {
    const results = new Map<string, F[]>();
    forEachThreadCount([1, 2, 3, 5], (threads) => {
      results.set(`threads=${threads}`, runAll());
      // The default is the CPU's (NTA on AMD Zen 5, L2 elsewhere): force each way.
      results.set(`threads=${threads} SEALKIT_FEW_ROWS_NTA=0`, withEnv({ SEALKIT_FEW_ROWS_NTA: '0' }, runAll));
      results.set(`threads=${threads} SEALKIT_FEW_ROWS_NTA=1`, withEnv({ SEALKIT_FEW_ROWS_NTA: '1' }, runAll));
    });
    const one = results.get('threads=1')!;
    for (const [what, outs] of results)
      outs.forEach((o, i) => assert.equal(bitsOf(o), bitsOf(one[i]!), `${isa} ${what} case ${i}`));
    // Where batched rows run on AMX tiles, the vdpbf16ps kernel they replace keeps the same promise.
    if (!addon.info().decodeRowsOnAmx) return;
    withEnv({ SEALKIT_AMX_FEW_ROWS: '0' }, () => {
      let base: F[] = [];
      forEachThreadCount([1, 2, 3, 5], (threads) => {
        if (threads === 1) base = runAll();
        for (const nta of ['0', '1'])
          withEnv({ SEALKIT_FEW_ROWS_NTA: nta }, runAll).forEach((o, i) =>
            assert.equal(bitsOf(o), bitsOf(base[i]!), `${isa} SEALKIT_AMX_FEW_ROWS=0 threads=${threads} NTA=${nta} case ${i}`));
      });
    });
  });
});

// The few-rows path (y = x W^T, up to 16 rows with a bf16 W, 4 with an f32 W) blocks W rows by 4
// (1-4 rows of x) or by 3 (5-16 rows, one or two groups of 4-8) and runs K 32 at a time with a
// masked tail: every row count, K around the 16- and 32-element steps, N not a multiple of the
// blocks, strides and alpha/beta, against f64.
test('gemm: few-rows path at every row count against f64, every ISA, bf16 and f32 W', () => {
  const r = rng(24);
  const cases: { c: GemmCase; what: string; bits: Uint16Array; ref: Float64Array }[] = [];
  for (let M = 1; M <= 16; M++) {
    for (const K of [1, 16, 17, 31, 33, 64, 100]) {
      const N = [1, 2, 5, 7, 70][(M + K) % 5]!;
      const c = gemmCase(M, N, K, false, true, r, 3, 0.75, M % 2 ? 0 : -1.5);
      cases.push({ c, what: `${M}x${N}x${K}`, bits: bf16Bits(c.B), ref: gemmNaive(c) });
    }
  }
  forEachIsa((isa) => {
    for (const { c, what, bits, ref } of cases) {
      assertRel(gemmRun(c, 'f32', { B: bits, bDtype: 'bf16' }), gemmNaiveBf16(c, bits, isa), 1e-5, `${isa} bf16 ${what}`);
      if (c.M <= 4) assertRel(gemmRun(c, 'f32'), ref, 1e-5, `${isa} f32 ${what}`);
    }
    // Where 2-16 rows run on AMX tiles, also the vdpbf16ps kernel they replace.
    if (addon.info().decodeRowsOnAmx)
      withEnv({ SEALKIT_AMX_FEW_ROWS: '0' }, () => {
        for (const { c, what, bits } of cases)
          assertRel(gemmRun(c, 'f32', { B: bits, bDtype: 'bf16' }), gemmNaiveBf16(c, bits, isa), 1e-5, `${isa} vdpbf16ps ${what}`);
      });
  });
});

// Batched decoding's GEMMs of 2-16 rows on a bf16 weight with a packed copy read its vdpbf16ps strips
// through the packed GEMM's micro-kernel and K blocks (native/cpu/gemm.cc, few_rows_strips): each
// element must have the bits of the same row in a GEMM of 20 rows (the packed path), at every row
// count, with partial strips, odd K, K over one block (1,536: three blocks) and alpha/beta; the same
// in a projection group and on 1-3 threads; within the bf16 contract of f64; and
// SEALKIT_FEW_ROWS_PACKED=0 must stream W's rows instead (different bits, same contract).
test('info: decodeRowsPacked says whether batched decoding reads packed strips; the switches turn it off', () => {
  const info = addon.info();
  assert.is(info.decodeRowsPacked, info.isa === 'avx512bf16' && !info.amx, 'on where bf16 GEMMs run on vdpbf16ps');
  if (info.amx) assert.is(withEnv({ SEALKIT_AMX: '0' }, () => addon.info().decodeRowsPacked), true, 'AMX off: vdpbf16ps');
  assert.is(withEnv({ SEALKIT_FEW_ROWS_PACKED: '0' }, () => addon.info().decodeRowsPacked), false, 'SEALKIT_FEW_ROWS_PACKED=0');
  assert.is(withEnv({ SEALKIT_PACKED_WEIGHTS: '0' }, () => addon.info().decodeRowsPacked), false, 'SEALKIT_PACKED_WEIGHTS=0');
});

test('gemm: 2-16 rows on a packed bf16 weight read its strips, with the bits of the packed GEMM at 20 rows', () => {
  const r = rng(35);
  const shapes = [[96, 64], [100, 575], [64, 1536], [40, 8]] as const;
  // 2-14 rows in one A strip; 15 and 16 in two (8 + 7, 8 + 8).
  const cases = shapes.flatMap(([N, K], si) => [2, 3, 5, 8, 13, 15, 16].map((M) => {
    const A20 = f32(rand(20 * K, r)), C20 = f32(rand(20 * N, r));
    const B = bf16Bits(rand(N * K, r));
    const [alpha, beta] = si % 2 ? [0.5, 0.25] : [1, 0];
    return { M, N, K, A20, C20, B, alpha, beta, what: `${M}x${N}x${K} alpha=${alpha} beta=${beta}` };
  }));
  const run = (c: (typeof cases)[number], M: number, packedB: boolean) => arr(op('gemm', 'f32', {
    M, N: c.N, K: c.K, transB: true, A: c.A20.subarray(0, M * c.K), C: c.C20.slice(0, M * c.N), B: c.B, bDtype: 'bf16',
    alpha: c.alpha, beta: c.beta, packedB,
  }), 'C');
  forEachIsaAndThreadsOnPackedWeights((isa, threads, kernel) => {
    if (isa !== 'avx512bf16' || kernel !== 'vdpbf16ps') return;
    for (const c of cases) {
      const label = `threads=${threads} ${c.what}`;
      const strips = run(c, c.M, true);
      sameBits(strips, run(c, 20, true).subarray(0, c.M * c.N), `${label}: rows of the 20-row packed GEMM`);
      const rows = withEnv({ SEALKIT_FEW_ROWS_PACKED: '0' }, () => run(c, c.M, true));
      sameBits(rows, run(c, c.M, false), `${label}: SEALKIT_FEW_ROWS_PACKED=0 streams W's rows`);
      if (c.K >= 64) assert.not.equal(bitsOf(strips), bitsOf(rows), `${label}: the two kernels ran`);
      const gc: GemmCase = { M: c.M, N: c.N, K: c.K, transA: false, transB: true, lda: c.K, ldb: c.K, ldc: c.N,
        alpha: c.alpha, beta: c.beta, A: Float64Array.from(c.A20.subarray(0, c.M * c.K)), B: new Float64Array(0),
        C: Float64Array.from(c.C20.subarray(0, c.M * c.N)) };
      assertRel(strips, gemmNaiveBf16(gc, c.B, isa), 1e-5, `${label}: against f64`);
    }
    // A projection group (decoding's q, k, v) gives each GEMM's bits alone.
    const M = 8, K = 576, Ns = [576, 192, 192];
    const A = f32(rand(M * K, r));
    const Ws = Ns.map((N) => bf16Bits(rand(N * K, r)));
    const args: Record<string, unknown> = { M, K, A, n: Ns.length, bDtype: 'bf16', packedB: true };
    Ns.forEach((N, i) => { args[`N${i}`] = N; args[`B${i}`] = Ws[i]; });
    const group = op('gemm_group', 'f32', args);
    Ns.forEach((N, i) => sameBits(arr(group, `C${i}`), arr(op('gemm', 'f32', { M, N, K, A, B: Ws[i], bDtype: 'bf16', transB: true, packedB: true }), 'C'),
      `threads=${threads} group W${i}`));
  });
});

// Decoding's one-row GEMMs on a weight coded in 12 bits (native/cpu/coded_weight.h: each element's
// low byte, and a 4-bit code for its high byte from the matrix's 15 commonest, code 15 escaping to a
// per-row list) must give the bits of the weight's own bf16 rows, which the coded kernel rebuilds in
// registers: at 1-16 rows, K tails inside either half of a 64-element group, partial blocks of W
// rows, escapes at group and half edges (rows with and without them in one block), alpha/beta and
// beta 0 over NaN; in a projection group; on 1-3 threads. A weight with more escapes than 1 in 1,024
// elements is not coded.
/** bf16 bits with rare high bytes (escapes) written at the given (row, column) places. */
function withEscapes(bits: Uint16Array, K: number, places: [number, number][]): Uint16Array {
  const out = bits.slice();
  const rare = [0x4f00, 0x0080, 0x0000, 0x8000, 0xcf12, 0x3a01, 0x0001, 0xc480];  // 2^31, tiny, +-0, ...
  places.forEach(([r, k], i) => { out[r * K + k] = rare[i % rare.length]!; });
  return out;
}

test('gemm: one-row GEMMs on 12-bit coded bf16 weights give the bits of the weight\'s rows', () => {
  const info = addon.info();
  const r = rng(41);
  const probe = op('gemm', 'f32', { M: 1, N: 4, K: 64, transB: true, A: f32(rand(64, r)), B: bf16Bits(rand(256, r)), bDtype: 'bf16', codedB: true });
  if (!info.codedWeights) {
    assert.is(probe.codedB, 0 as unknown as number, 'no coded copy where the CPU lacks the kernel');
    console.log(`skip: coded weights need AVX512-BF16 and AVX512-VBMI (isa ${info.isa})`);
    return;
  }
  // [3, 4160]: 65 groups, so a row's groups that hold escapes take two words of bits (coded_weight.h).
  const shapes: [number, number][] = [[1, 1], [3, 31], [5, 32], [4, 33], [67, 64], [130, 65], [9, 96], [70, 100], [33, 576], [13, 1536], [3, 4160]];
  const cases = shapes.flatMap(([N, K], si) => [1, 2, 5, 16].map((M) => {
    const base = bf16Bits(rand(N * K, r, 0.05));
    // Escapes where the budget (N K / 1,024) allows: first, half and group edges, the last column,
    // in the first rows and in the last (partial) block. Past 64 groups: escapes in group 64 (the
    // second word of a row's group bits) of rows with none in group 0 (the same bit of the first).
    const budget = Math.floor((N * K) / 1024);
    const edges = [0, 31, 32, 63, 64, 95, K - 1].filter((k) => k < K);
    const places: [number, number][] = [];
    if (K > 64 * 64) places.push([0, 64 * 64], [1, 64 * 64 - 1], [1, K - 1], [2, 0], [2, 64 * 64 + 31]);
    else for (const row of [0, N - 1, 1, Math.floor(N / 2)]) for (const k of edges) if (places.length < budget && row < N) places.push([row, k]);
    const B = withEscapes(base, K, places);
    const [alpha, beta] = si % 2 ? [0.5, 0.25] : [1, 0];
    const C = f32(rand(M * N, r));
    if (beta === 0) C.fill(NaN);
    return { M, N, K, A: f32(rand(M * K, r)), B, C, alpha, beta, what: `${M}x${N}x${K} escapes=${places.length} alpha=${alpha} beta=${beta}` };
  }));
  assert.ok(cases.some((c) => c.what.includes('escapes=0')) && cases.some((c) => !c.what.includes('escapes=0')), 'cases with and without escapes');
  const run = (c: (typeof cases)[number], codedB: boolean) => {
    const res = op('gemm', 'f32', { M: c.M, N: c.N, K: c.K, transB: true, A: c.A, B: c.B, bDtype: 'bf16', C: c.C.slice(), alpha: c.alpha, beta: c.beta, codedB });
    if (codedB) assert.ok(res.codedB, `${c.what}: coded`);
    return arr(res, 'C');
  };
  keepingThreads(() => {
    for (const threads of [1, 2, 3]) {
      addon.setThreads(threads);
      for (const c of cases) {
        const label = `threads=${threads} ${c.what}`;
        sameBits(run(c, true), run(c, false), `${label}: the bf16 rows' bits`);
        sameBits(withEnv({ SEALKIT_CODED_WEIGHTS: '0' }, () => run(c, true)), run(c, false), `${label}: switch off`);
      }
      // Decoding's q, k, v as one group: each GEMM's bits alone.
      const K = 576, Ns = [576, 192, 192];
      const A = f32(rand(K, r));
      const Ws = Ns.map((N, i) => withEscapes(bf16Bits(rand(N * K, r, 0.05)), K, [[i, 5], [N - 1, 64], [N - 2, 575]]));
      const args: Record<string, unknown> = { M: 1, K, A, n: Ns.length, bDtype: 'bf16', codedB: true };
      Ns.forEach((N, i) => { args[`N${i}`] = N; args[`B${i}`] = Ws[i]; });
      const group = op('gemm_group', 'f32', args);
      assert.ok(group.codedB, 'group coded');
      Ns.forEach((N, i) => sameBits(arr(group, `C${i}`), arr(op('gemm', 'f32', { M: 1, N, K, A, B: Ws[i], bDtype: 'bf16', transB: true }), 'C'),
        `threads=${threads} group W${i}`));
    }
  });
  // Past 1 escape in 1,024 elements the weight stays uncoded: magnitudes spread over 2^-40..2^40 take
  // about 80 high bytes, 15 of which get codes.
  const N = 8, K = 128;
  const many = bf16Bits(Float64Array.from({ length: N * K }, () => Math.fround((r() < 0.5 ? -1 : 1) * 2 ** (r() * 80 - 40))));
  const res = op('gemm', 'f32', { M: 1, N, K, transB: true, A: f32(rand(K, r)), B: many, bDtype: 'bf16', codedB: true });
  assert.is(res.codedB, false as unknown as number, 'too many escapes: not coded');
});

// Batched decoding's GEMMs (2-16 rows) read the packed strips; coded, their words are rebuilt per
// pair step in registers: the bits of the packed strips at every row count, with partial strips, odd
// K (a padded pair), K over one block (1,536: three blocks, escape offsets per block), escapes and
// alpha/beta; in a projection group; on 1-3 threads.
test('gemm: 2-16 rows on coded packed strips give the bits of the packed strips', () => {
  const info = addon.info();
  if (!info.codedWeights || !info.decodeRowsPacked) {
    console.log(`skip: coded strips need AVX512-BF16, AVX512-VBMI and packed strips for batched decoding (isa ${info.isa})`);
    return;
  }
  const r = rng(43);
  const cases = ([[96, 64], [100, 575], [64, 1536], [40, 8], [33, 129]] as const).flatMap(([N, K], si) => [2, 5, 8, 14, 16].map((M) => {
    const budget = Math.floor((N * K) / 1024);
    const places: [number, number][] = [];
    for (const row of [0, N - 1, 31, 32]) for (const k of [0, 1, 62, 63, 575, K - 1]) if (places.length < budget && row < N && k < K) places.push([row, k]);
    const [alpha, beta] = si % 2 ? [0.5, 0.25] : [1, 0];
    const C = f32(rand(M * N, r));
    if (beta === 0) C.fill(NaN);
    return { M, N, K, A: f32(rand(M * K, r)), B: withEscapes(bf16Bits(rand(N * K, r, 0.05)), K, places), C, alpha, beta,
      what: `${M}x${N}x${K} escapes=${places.length} alpha=${alpha} beta=${beta}` };
  }));
  const run = (c: (typeof cases)[number], codedB: boolean) => {
    const res = op('gemm', 'f32', { M: c.M, N: c.N, K: c.K, transB: true, A: c.A, B: c.B, bDtype: 'bf16', C: c.C.slice(), alpha: c.alpha, beta: c.beta, packedB: true, codedB });
    if (codedB) assert.ok(res.codedB, `${c.what}: coded`);
    return arr(res, 'C');
  };
  withEnv({ SEALKIT_AMX: '0' }, () => keepingThreads(() => {
    for (const threads of [1, 2, 3]) {
      addon.setThreads(threads);
      for (const c of cases) sameBits(run(c, true), run(c, false), `threads=${threads} ${c.what}: the packed strips' bits`);
      const M = 8, K = 576, Ns = [576, 192, 192];
      const A = f32(rand(M * K, r));
      const Ws = Ns.map((N, i) => withEscapes(bf16Bits(rand(N * K, r, 0.05)), K, [[i, 5], [N - 1, 64]]));
      const args: Record<string, unknown> = { M, K, A, n: Ns.length, bDtype: 'bf16', packedB: true, codedB: true };
      Ns.forEach((N, i) => { args[`N${i}`] = N; args[`B${i}`] = Ws[i]; });
      const group = op('gemm_group', 'f32', args);
      assert.ok(group.codedB, 'group coded');
      Ns.forEach((N, i) => sameBits(arr(group, `C${i}`), arr(op('gemm', 'f32', { M, N, K, A, B: Ws[i], bDtype: 'bf16', transB: true, packedB: true }), 'C'),
        `threads=${threads} group W${i}`));
    }
  }));
});

test('gemm_bench: one time per call, on aligned copies that give gemm\'s C (with and without an update)', () => {
  // bench/gemm.ts and bench/gemv.ts time kernels through gemm_bench, which copies A, B and C into
  // 64-byte-aligned buffers first (as the CPU backend allocates tensors) and copies C back.
  const r = rng(25);
  for (const [M, N, K, bDtype] of [[8, 70, 33, 'bf16'], [3, 5, 100, 'f32'], [40, 33, 17, 'f32']] as const) {
    const c = gemmCase(M, N, K, false, true, r, 1, 1.25, 0);
    const B = bDtype === 'bf16' ? bf16Bits(c.B) : f32(c.B);
    const args = { M, N, K, transB: true, lda: c.lda, ldb: c.ldb, ldc: c.ldc, alpha: 1.25, A: f32(c.A), B, bDtype };
    const bench = addon.opRun('gemm_bench', 'f32', { ...args, C: f32(c.C), iters: 3 }) as unknown as { times: Float64Array; C: Float32Array };
    assert.is(bench.times.length, 3, `${M}x${N}x${K}: times`);
    assert.ok(bench.times.every((t) => t > 0 && t < 10), `${M}x${N}x${K}: times ${Array.from(bench.times)}`);
    const one = arr(op('gemm', 'f32', { ...args, C: f32(c.C) }), 'C');
    sameBits(bench.C, one, `${M}x${N}x${K} ${bDtype}`);
    // ...and with a low-rank update riding along (bench/ab.ts times gemm+update shapes).
    const update = { U: f32(rand(M * 4, r)), V: f32(rand(4 * N, r)), rank: 4, transV: true, updateScale: 0.5 };
    const benchUp = addon.opRun('gemm_bench', 'f32', { ...args, ...update, C: f32(c.C), iters: 2 }) as unknown as { C: Float32Array };
    const oneUp = arr(op('gemm', 'f32', { ...args, ...update, C: f32(c.C) }), 'C');
    sameBits(benchUp.C, oneUp, `${M}x${N}x${K} ${bDtype} with update`);
    assert.not.equal(bitsOf(oneUp), bitsOf(one), `${M}x${N}x${K} ${bDtype}: update applied`);
  }
});

// Few rows against many columns (the LM head, its input gradient's K slabs, prefill): each task packs
// the B strips it uses; many rows against a small B (tiny models' projections): each task packs its
// own rows of A and U (native/cpu/gemm.cc, packed_gemm). Either must give the bits of the shared
// packed operands (SEALKIT_LOCAL_PACK=0) on 1, 2 and 3 threads, every ISA, every orientation, f32
// and bf16 B, with a low-rank update on the tiles, and match f64.
test('gemm: operands packed by the tasks that use them give the shared packing\'s bits, against f64', () => {
  const r = rng(27);
  // B strips: 45x500x577 has K across K blocks, 240x300x1090 A just under its size limit (256K
  // floats), 20x400x2600 K slabs. A rows: 300x40x70, 600x200x300 (B's panel just under its limit,
  // 64K floats), 150x64x577 (K blocks).
  const shapes = [[20, 300, 70], [45, 500, 577], [240, 300, 1090], [20, 400, 2600], [300, 40, 70], [600, 200, 300], [150, 64, 577]];
  const cases = shapes.flatMap(([M, N, K]) =>
    ORIENTS.map(([ta, tb], o) => {
      const c = gemmCase(M!, N!, K!, ta, tb, r, 2, 0.75, o % 2 ? 0.5 : 0);
      const rank = 16, transV = o >= 2;
      const U = f32(rand(M! * rank, r)), V = f32(rand(rank * N!, r));
      return { c, bits: bf16Bits(c.B), ref: gemmNaive(c), update: { U, V, rank, transV, updateScale: 2 }, what: `${M}x${N}x${K} tA=${ta} tB=${tb}` };
    }));
  const saved = process.env.SEALKIT_LOCAL_PACK;
  const runAll = (local: boolean) => {
    if (local) delete process.env.SEALKIT_LOCAL_PACK;
    else process.env.SEALKIT_LOCAL_PACK = '0';
    return cases.flatMap(({ c, bits, update }) => [
      gemmRun(c, 'f32'), gemmRun(c, 'f32', { B: bits, bDtype: 'bf16' }), gemmRun(c, 'f32', { B: bits, bDtype: 'bf16', ...update }),
    ]);
  };
  try {
    keepingThreads(() => forEachIsa((isa) => {
      addon.setThreads(2);
      const shared = runAll(false);
      cases.forEach(({ c, what, ref }, i) => assertRel(shared[3 * i]!, ref, 1e-5, `${isa} ${what}`));
      for (const threads of [1, 2, 3]) {
        addon.setThreads(threads);
        runAll(true).forEach((local, i) => sameBits(local, shared[i]!, `${isa} threads=${threads} ${cases[Math.floor(i / 3)]!.what} #${i % 3}`));
      }
    }));
  } finally {
    if (saved === undefined) delete process.env.SEALKIT_LOCAL_PACK;
    else process.env.SEALKIT_LOCAL_PACK = saved;
  }
});

// The model's bf16 weights are packed once (cpu::pack_weight) and handed to each GEMM against them,
// which then reads B's strips from there on every path (shared packing, task-packed B strips, task-
// packed A rows, K slabs) and must give the bits of packing per call, with and without a low-rank
// update, on 1-3 threads. Only the vdpbf16ps kernel reads one; elsewhere none is made.
test('gemm: B packed ahead (bf16 weights) gives the bits of packing per call, on every path', () => {
  const r = rng(29);
  // Shared: 600x700x901 (odd K; B packed ahead sends M > N to task-packed A rows). Task-packed B
  // strips: 20x300x70, 45x500x577. K slabs: 20x400x2600 (on AMX 20x64x8500). Task-packed A rows: 300x200x577, 300x40x70,
  // 600x200x300. (2-16 rows read the packed strips: the strips test below.)
  const shapes = [[600, 700, 901], [300, 200, 577], [20, 300, 70], [45, 500, 577], [20, 400, 2600], [300, 40, 70], [600, 200, 300], [20, 64, 8500]];
  const cases = shapes.flatMap(([M, N, K]) =>
    ([[false, true], [false, false], [true, false]] as [boolean, boolean][]).map(([ta, tb], o) => {
      const c = gemmCase(M!, N!, K!, ta, tb, r, 0, o === 2 ? -0.5 : 1, o === 1 ? 0.5 : 0);
      const rank = 16;
      const update = { U: f32(rand(M! * rank, r)), V: f32(rand(rank * N!, r)), rank, transV: tb, updateScale: 2 };
      return { c, bits: bf16Bits(c.B), update, what: `${M}x${N}x${K} tA=${ta} tB=${tb}` };
    }));
  forEachIsaAndThreadsOnPackedWeights((isa, threads, kernel) => {
    for (const { c, bits, update, what } of cases) {
      for (const extra of [{}, update]) {
        const args = { B: bits, bDtype: 'bf16', ...extra };
        const plain = gemmRun(c, 'f32', args);
        const res = op('gemm', 'f32', {
          M: c.M, N: c.N, K: c.K, transA: c.transA, transB: c.transB, lda: c.lda, ldb: c.ldb, ldc: c.ldc,
          alpha: c.alpha, beta: c.beta, A: f32(c.A), C: f32(c.C), packedB: true, ...args,
        });
        const label = `${isa} ${kernel} threads=${threads} ${what}${extra === update ? ' +update' : ''}`;
        assert.is(res.packedB, isa === 'avx512bf16', `${label}: packed weight made`);
        sameBits(arr(res, 'C'), plain, label);
      }
    }
  });
  // ldb must be op(B)'s row length: the packed weight is that of a whole [rows, ldb] weight.
  assert.throws(() => op('gemm', 'f32', { M: 2, N: 2, K: 2, ldb: 3, A: new Float32Array(4), B: new Uint16Array(6), bDtype: 'bf16', packedB: true }), (e: Error) => /ldb/.test(e.message));
});

// The MLP's gate and up projections with SwiGLU on them (native/cpu/gemm.cc, gemm_gate_up_swiglu):
// where both bf16 weights come packed for the vdpbf16ps kernel and K fits one K block, each tile of
// both products is computed into scratch and only act = silu(gate) * up is stored. act must have the
// bits of gemm(gate), gemm(up), swiglu_forward on every path (shared packing, task-packed B strips,
// task-packed A rows, streamed stores), with partial strips and rows, alpha != 1 and a padded act,
// on 1-3 threads; it fuses exactly where it should and otherwise runs the calls. Where the CPU has
// AMX, the same on AMX tiles (both weights' strips packed per call; K up to 768 in one block).
test('gemm_gate_up_swiglu: fused gate/up tiles give the bits of the separate calls', () => {
  const r = rng(33);
  // [M, N, K, fusable]: shared 300x200x575 (odd K), task-packed B strips 20x300x70, task-packed A
  // rows 600x40x64, streamed act 700x800x64; not fused: K deeper than one block (600), few rows (8).
  const shapes: [number, number, number, boolean][] = [
    [300, 200, 575, true], [20, 300, 70, true], [600, 40, 64, true], [700, 800, 64, true], [100, 96, 600, false], [8, 96, 64, false],
  ];
  const cases = shapes.map(([M, N, K, fusable], i) => {
    const x = f32(rand(M * K, r));
    const gate = bf16Bits(rand(N * K, r)), up = bf16Bits(rand(N * K, r));
    const ldAct = i % 2 ? N + 4 : N;
    return { M, N, K, fusable, x, gate, up, ldAct, alphaUp: i % 3 === 0 ? 0.5 : 1, what: `${M}x${N}x${K}` };
  });
  const check = (label: string, fusedWhere: (c: (typeof cases)[number]) => boolean) => {
    for (const c of cases) {
      const gemmArgs = (B: Uint16Array, alpha: number) =>
        ({ M: c.M, N: c.N, K: c.K, transB: true, A: c.x, B, bDtype: 'bf16', alpha, packedB: true });
      const res = op('gemm_gate_up_swiglu', 'f32', { gate: gemmArgs(c.gate, 1), up: gemmArgs(c.up, c.alphaUp), ldAct: c.ldAct });
      // The separate calls on the same packed copies (their bits are those of packing per call, but
      // 2-16 rows read the copies' strips where W's rows would stream unpacked).
      const g = arr(op('gemm', 'f32', gemmArgs(c.gate, 1)), 'C');
      const u = arr(op('gemm', 'f32', gemmArgs(c.up, c.alphaUp)), 'C');
      const act = arr(op('swiglu_forward', 'f32', { gate: g, up: u }), 'out');
      const what = `${label} ${c.what}`;
      assert.is(res.fused, fusedWhere(c), `${what}: fused`);
      const got = arr(res, 'act');
      const rows = new Float32Array(c.M * c.N);
      for (let i = 0; i < c.M; i++) rows.set(got.subarray(i * c.ldAct, i * c.ldAct + c.N), i * c.N);
      sameBits(rows, act, what);
      if (!res.fused) sameBits(arr(res, 'upC'), u, `${what}: up's C`);
    }
  };
  // AMX's one K block reaches K = 768 (600 too); it fuses on packed weights and, without them
  // (SEALKIT_PACKED_WEIGHTS=0), on strips it packs per call.
  forEachIsaAndThreadsOnPackedWeights((isa, threads, kernel) =>
    check(`${isa} ${kernel} threads=${threads}`, (c) => isa === 'avx512bf16' && (kernel === 'amx' ? c.M > 16 : c.fusable)));
  if (addon.info().amx) {
    withEnv({ SEALKIT_PACKED_WEIGHTS: '0' }, () => check('AMX SEALKIT_PACKED_WEIGHTS=0', (c) => c.M > 16));
    withEnv({ SEALKIT_FUSED_GATE_UP: '0' }, () => check('AMX SEALKIT_FUSED_GATE_UP=0', () => false));
  }
  const args = { M: 20, N: 40, K: 8, transB: true, A: new Float32Array(160), B: new Float32Array(320) };
  assert.throws(() => op('gemm_gate_up_swiglu', 'f32', { gate: args, up: { ...args, N: 30, B: new Float32Array(240) } }), (e: Error) => /gate's M and N/.test(e.message));
  assert.throws(() => op('gemm_gate_up_swiglu', 'f32', { gate: args, up: args, ldAct: 39 }), (e: Error) => /ldAct/.test(e.message));
});

// A given as bf16 rows (aDtype 'bf16': GemmArgs::A_bf16), as scoring's norms and SwiGLU hand them to
// the next projections. The contract, on every ISA, path and thread count: C is gemm's on the f32
// values of those rows. Under AVX512-BF16 the vdpbf16ps packed kernel reads the rows as they are
// (task-packed rows, the mirror and shared paths, three K blocks, K slabs, partial row strips, a
// fused low-rank update, a padded lda); few rows, a narrow N, an odd K or lda and AMX widen them
// first. And since the kernels round f32 A to bf16 anyway, C from f32 A is C from round_to_bf16(A):
// same bits.
test('gemm: A as bf16 rows gives the bits of its f32 values, and of the f32 A it rounds from', () => {
  const r = rng(35);
  // [M, N, K, lda pad, packedB, rank of a fused update (0: none)]
  const shapes: [number, number, number, number, boolean, number][] = [
    [600, 64, 128, 0, true, 0], [140, 64, 1536, 2, true, 0], [64, 3000, 128, 0, true, 0], [300, 600, 576, 0, false, 0],
    [40, 64, 2100, 0, true, 0], [5, 96, 64, 0, true, 0], [200, 16, 64, 0, false, 0], [100, 64, 127, 0, true, 0],
    [100, 64, 128, 1, true, 0], [600, 96, 128, 0, true, 16], [31, 40, 64, 4, false, 8],
  ];
  const widen = (h: Uint16Array) => Float32Array.from(h, fromBf16);
  const cases = shapes.map(([M, N, K, pad, packedB, rank]) => {
    const lda = K + pad;
    const x = f32(rand(M * lda, r));
    const update = rank ? { rank, U: f32(rand(M * rank, r)), V: f32(rand(rank * N, r)), updateScale: 2 } : {};
    return { M, N, K, lda, packedB, x, x16: bf16Bits(x), B: bf16Bits(rand(N * K, r)), update, what: `${M}x${N}x${K} lda=${lda} rank=${rank}` };
  });
  const bf16Isa = supportedIsas().includes('avx512bf16');
  forEachIsaAndThreadsOnPackedWeights((isa, threads, kernel) => {
    for (const c of cases) {
      const args = { M: c.M, N: c.N, K: c.K, lda: c.lda, transB: true, B: c.B, bDtype: 'bf16', packedB: c.packedB, ...c.update };
      const what = `${isa} ${kernel} threads=${threads} ${c.what}`;
      const rows = arr(op('gemm', 'f32', { ...args, aDtype: 'bf16', A: c.x16 }), 'C');
      sameBits(rows, arr(op('gemm', 'f32', { ...args, A: widen(c.x16) }), 'C'), `${what}: bf16 rows against their values`);
      if (isa === 'avx512bf16') {
        const rounded = op('round_to_bf16', 'f32', { x: c.x })['out'] as unknown as Uint16Array;
        sameBits(rows, arr(op('gemm', 'f32', { ...args, A: c.x }), 'C'), `${what}: against the f32 A (x16 from toBf16)`);
        assert.equal(Array.from(rounded), Array.from(c.x16), `${what}: round_to_bf16 against toBf16`);
      }
    }
    // q, k, v as one group on x's bf16 rows (scoring's first projections).
    const M = 300, K = 128, x16 = bf16Bits(rand(M * K, r));
    const Bs = { B0: bf16Bits(rand(128 * K, r)), B1: bf16Bits(rand(64 * K, r)), B2: bf16Bits(rand(64 * K, r)) };
    const group = { M, K, n: 3, N0: 128, N1: 64, N2: 64, ...Bs, bDtype: 'bf16', packedB: true };
    const g16 = op('gemm_group', 'f32', { ...group, aDtype: 'bf16', A: x16 });
    const g32 = op('gemm_group', 'f32', { ...group, A: widen(x16) });
    for (const c of ['C0', 'C1', 'C2']) sameBits(arr(g16, c), arr(g32, c), `${isa} ${kernel} threads=${threads} group ${c}`);
    // bf16 denormals among the rows (read as they are, or packed by a transpose alone, where packing
    // their widened f32 values flushes them: vdpbf16ps reads denormals as zero either way).
    for (const [Md, Nd, Kd] of [[600, 64, 128], [64, 3000, 128]] as const) {
      const d16 = bf16Bits(rand(Md * Kd, r));
      for (let i = 0; i < d16.length; i += 7) d16[i] = i % 2 ? 0x0001 : 0x807f;
      const args = { M: Md, N: Nd, K: Kd, transB: true, B: bf16Bits(rand(Nd * Kd, r)), bDtype: 'bf16', packedB: true };
      sameBits(arr(op('gemm', 'f32', { ...args, aDtype: 'bf16', A: d16 }), 'C'), arr(op('gemm', 'f32', { ...args, A: widen(d16) }), 'C'),
        `${isa} ${kernel} threads=${threads} ${Md}x${Nd}x${Kd} with denormals`);
    }
  });
  // Round to nearest even with ties both ways, f32 denormals to zero, NaN kept NaN, infinities kept.
  if (bf16Isa) {
    const special = f32([1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), 1e-40, -1e-40, Infinity, -Infinity, NaN, 3.4e38, 0, -0]);
    const got = op('round_to_bf16', 'f32', { x: special })['out'] as unknown as Uint16Array;
    const want = [0x3f80, 0x3f82, 0xbf80, 0x0000, 0x8000, 0x7f80, 0xff80, -1, 0x7f80, 0x0000, 0x8000];
    want.forEach((w, i) => {
      if (w === -1) assert.ok((got[i]! & 0x7fff) > 0x7f80, `NaN stays NaN (got ${got[i]!.toString(16)})`);
      else assert.is(got[i], w, `round_to_bf16(${special[i]}) = ${got[i]!.toString(16)}`);
    });
  } else {
    assert.throws(() => op('round_to_bf16', 'f32', { x: f32([1]) }), (e: Error) => /AVX512-BF16/.test(e.message));
  }
  assert.throws(() => op('gemm', 'f32', { M: 2, N: 2, K: 2, transA: true, aDtype: 'bf16', A: new Uint16Array(4), B: new Float32Array(4) }),
    (e: Error) => /aDtype/.test(e.message));
  assert.throws(() => op('gemm', 'f64', { M: 2, N: 2, K: 2, aDtype: 'bf16', A: new Uint16Array(4), B: new Float64Array(4) }),
    (e: Error) => /aDtype/.test(e.message));
});

// The fused gate/up/SwiGLU storing act as bf16 rows (actBf16): each value is the f32 act's rounded by
// round_to_bf16, fused or not, on 1-3 threads (AVX512-BF16 only: the rounding needs it).
test('gemm_gate_up_swiglu: act as bf16 rows is the f32 act rounded', () => {
  if (!supportedIsas().includes('avx512bf16')) return;
  const r = rng(36);
  // [M, N, K, fusable on the vdpbf16ps kernel]: task-packed rows, a streamed act (3 MB), partial
  // strips and a padded act; not fused: K deeper than one block.
  const shapes: [number, number, number, boolean][] = [[600, 40, 64, true], [1024, 1536, 64, true], [70, 100, 64, true], [100, 96, 600, false]];
  forEachIsaAndThreadsOnPackedWeights((isa, threads, kernel) => {
    if (isa !== 'avx512bf16') return;
    shapes.forEach(([M, N, K, fusable], i) => {
      const x16 = bf16Bits(rand(M * K, r));
      const gemmArgs = (B: Uint16Array) => ({ M, N, K, transB: true, aDtype: 'bf16', A: x16, B, bDtype: 'bf16', packedB: true });
      const ldAct = i % 2 ? N + 32 : N;
      const call = { gate: gemmArgs(bf16Bits(rand(N * K, r))), up: gemmArgs(bf16Bits(rand(N * K, r))), ldAct };
      const f = op('gemm_gate_up_swiglu', 'f32', call);
      const h = op('gemm_gate_up_swiglu', 'f32', { ...call, actBf16: true });
      const what = `${kernel} threads=${threads} ${M}x${N}x${K}`;
      assert.is(h.fused, kernel === 'vdpbf16ps' && fusable, `${what}: fused`);
      const want = op('round_to_bf16', 'f32', { x: denseRows(arr(f, 'act'), M, N, ldAct) })['out'] as unknown as Uint16Array;
      const got = h['act'] as unknown as Uint16Array;
      for (let row = 0; row < M; row++)
        for (let j = 0; j < N; j++)
          if (got[row * ldAct + j] !== want[row * N + j]) assert.unreachable(`${what}: act differs at ${row},${j}`);
    });
  });
});

// SwiGLU's backward pass on the down projection's input gradient (native/cpu/gemm.cc,
// gemm_swiglu_backward): where the bf16 weight comes packed for the vdpbf16ps kernel and K fits one K
// block, each tile of dact (with the adapter's update added) stays in scratch and only dgate and dup
// are stored. They must have the bits of gemm (with the update), then swiglu_backward, on every
// packing path, with partial strips and rows, alpha != 1, padded rows, both layouts of the update's
// V, on 1-3 threads; it fuses exactly where it should and otherwise runs the calls.
test('gemm_swiglu_backward: fused dact tiles give the bits of the separate calls', () => {
  const r = rng(34);
  // [M, N, K, rank (0: no update), V transposed, fusable]: shared packing 300x200x575 (odd K),
  // task-packed B strips 20x300x70, task-packed A rows 600x40x64, the tiny preset's 1024x384x128, 8
  // rows (one partial row strip; few-rows streaming is for y = x W^T only), 3 rows; not fused: K
  // deeper than one block (600), an update of 3 rows with V transposed (gemm runs that one on its
  // own), and a weight not packed ahead (the last). 1024x528x64 and 1040x512x40 are 2 MB or more
  // each, so dgate and dup stream (kStreamCBytes) wherever a row's vector is 64-byte aligned (with
  // ldc = 531 rows fall on every offset, so streamed and normal vectors mix).
  const shapes: [number, number, number, number, boolean, boolean][] = [
    [300, 200, 575, 16, false, true], [20, 300, 70, 0, false, true], [600, 40, 64, 8, true, true],
    [1024, 384, 128, 16, false, true], [8, 96, 64, 4, true, true], [3, 96, 64, 4, false, true],
    [100, 96, 600, 16, false, false], [3, 96, 64, 4, true, false], [64, 64, 64, 4, false, false],
    [1024, 528, 64, 16, false, true], [1040, 512, 40, 8, true, true],
  ];
  const cases = shapes.map(([M, N, K, rank, transV, fusable], i) => {
    const ldc = i % 2 ? N + 3 : N;
    const U = f32(rand(M * Math.max(rank, 1), r)), V = f32(rand(Math.max(rank, 1) * N, r));
    return {
      M, N, K, rank, fusable, ldc, transV, U, V, dy: f32(rand(M * K, r)), W: bf16Bits(rand(K * N, r)),
      gate: f32(rand(M * ldc, r).map((x) => 4 * x)), up: f32(rand(M * ldc, r)), alpha: i % 3 === 0 ? 0.5 : 1,
      what: `${M}x${N}x${K} r${rank}${transV ? ' tV' : ''}`,
    };
  });
  forEachIsaAndThreadsOnPackedWeights((isa, threads, kernel) => {
    for (const c of cases) {
      // dx = dy W (W stored [K, N], as the model's dx GEMM reads its weight), + 0.75 U op(V).
      const args = (packedB: boolean) => ({
        M: c.M, N: c.N, K: c.K, A: c.dy, B: c.W, bDtype: 'bf16', alpha: c.alpha, ldc: c.ldc, packedB,
        ...(c.rank ? { U: c.U, V: c.V, rank: c.rank, transV: c.transV, updateScale: 0.75 } : {}),
      });
      const res = op('gemm_swiglu_backward', 'f32', { ...args(c.M !== 64), gate: c.gate, up: c.up });
      const dact = arr(op('gemm', 'f32', args(false)), 'C');
      const rows = (x: F) => denseRows(x, c.M, c.N, c.ldc);
      const ref = op('swiglu_backward', 'f32', { gate: rows(c.gate), up: rows(c.up), dout: rows(dact) });
      const label = `${isa} ${kernel} threads=${threads} ${c.what}`;
      // Not on AMX tiles: the fused update rides on the vdpbf16ps kernel's tiles only.
      assert.is(res.fused, kernel === 'vdpbf16ps' && isa === 'avx512bf16' && c.fusable, `${label}: fused`);
      sameBits(rows(arr(res, 'dgate')), arr(ref, 'dgate'), `${label}: dgate`);
      sameBits(rows(arr(res, 'dup')), arr(ref, 'dup'), `${label}: dup`);
      if (!res.fused) sameBits(rows(arr(res, 'C')), rows(dact), `${label}: C`);
    }
  });
  assert.throws(() => op('gemm_swiglu_backward', 'f32', { M: 20, N: 40, K: 8, A: new Float32Array(160), B: new Float32Array(320), gate: new Float32Array(800), up: new Float32Array(799) }), (e: Error) => /up/.test(e.message));
  assert.throws(() => op('gemm_swiglu_backward', 'f64', { M: 1, N: 1, K: 1, A: new Float64Array(1), B: new Float64Array(1), gate: new Float64Array(1), up: new Float64Array(1) }), (e: Error) => /f32/.test(e.message));
});

// SwiGLU's forward pass on the up projection's GEMM (native/cpu/gemm.cc, gemm_up_swiglu), for
// scoring under adapters on gate and up: where gemm_swiglu_backward would fuse, each tile of up (with
// its update, one adapter's or segmented) stays in scratch and only act is stored. act must have the
// bits of gemm (with the update) then swiglu_forward, on the shapes of the backward test, with
// partial strips and rows, alpha != 1, padded rows, V both ways, segments, on 1-3 threads; it fuses
// exactly where it should and otherwise runs the calls (and fills C).
test('gemm_up_swiglu: fused up tiles give the bits of the separate calls', () => {
  const r = rng(38);
  // [M, N, K, rank (0: no update, -1: 64-row segments), V transposed, fusable]: as in the backward
  // test (shared packing, task-packed strips and rows, the tiny preset; not fused: 8 and 3 rows (y =
  // x W^T streams W's rows there), a deep K, a weight not packed; 2 MB and more: act streams), and
  // segments.
  const shapes: [number, number, number, number, boolean, boolean][] = [
    [300, 200, 575, 16, false, true], [20, 300, 70, 0, false, true], [600, 40, 64, 8, true, true],
    [1024, 384, 128, 16, true, true], [8, 96, 64, 4, true, false], [3, 96, 64, 4, false, false],
    [100, 96, 600, 16, false, false], [3, 96, 64, 4, true, false], [64, 64, 64, 4, false, false],
    [1024, 528, 64, 16, true, true], [1040, 512, 40, 8, false, true], [1024, 528, 64, -1, true, true],
  ];
  const cases = shapes.map(([M, N, K, rank, transV, fusable], i) => {
    const ldc = i % 2 ? N + 3 : N;
    const seg = rank < 0;
    const x = seg ? segmentedCase(M, N, K, true, transV, Array.from({ length: M / 64 }, (_, j) => [j * 64, 64] as [number, number]).filter((_, j) => j !== 3), r, 0) : undefined;
    const rk = seg ? 16 : Math.max(rank, 1);
    return {
      M, N, K, rank, fusable, ldc, transV, x, U: f32(rand(M * rk, r)), V: f32(rand(rk * N, r)),
      xin: f32(rand(M * K, r)), W: bf16Bits(rand(N * K, r)), gate: f32(rand(M * ldc, r).map((v) => 4 * v)),
      alpha: i % 3 === 0 ? 0.5 : 1, what: `${M}x${N}x${K} r${rank}${transV ? ' tV' : ''}`,
    };
  });
  forEachIsaAndThreadsOnPackedWeights((isa, threads, kernel) => {
    for (const c of cases) {
      // up = x W^T (W stored [N, K], as the model's forward GEMMs read their weights), + its update.
      const update = c.x ? segmentedArgs(c.x) : c.rank ? { U: c.U, V: c.V, rank: c.rank, transV: c.transV, updateScale: 0.75 } : {};
      const args = (packedB: boolean) => ({
        M: c.M, N: c.N, K: c.K, A: c.xin, B: c.W, transB: true, bDtype: 'bf16', alpha: c.alpha, ldc: c.ldc, packedB, ...update,
      });
      // The reference reads the weight as the call does: few-rows GEMMs of y = x W^T round
      // differently on packed strips (SEALKIT_FEW_ROWS_PACKED).
      const packed = c.M !== 64;
      const res = op('gemm_up_swiglu', 'f32', { ...args(packed), gate: c.gate });
      const up = arr(op('gemm', 'f32', args(packed)), 'C');
      const rows = (v: F) => denseRows(v, c.M, c.N, c.ldc);
      const ref = arr(op('swiglu_forward', 'f32', { gate: rows(c.gate), up: rows(up) }), 'out');
      const label = `${isa} ${kernel} threads=${threads} ${c.what}`;
      assert.is(res.fused, kernel === 'vdpbf16ps' && isa === 'avx512bf16' && c.fusable, `${label}: fused`);
      sameBits(rows(arr(res, 'act')), ref, `${label}: act`);
      if (!res.fused) sameBits(rows(arr(res, 'C')), rows(up), `${label}: C`);
    }
  });
  assert.throws(() => op('gemm_up_swiglu', 'f32', { M: 20, N: 40, K: 8, A: new Float32Array(160), B: new Float32Array(320), gate: new Float32Array(799) }), (e: Error) => /gate/.test(e.message));
  assert.throws(() => op('gemm_up_swiglu', 'f64', { M: 1, N: 1, K: 1, A: new Float64Array(1), B: new Float64Array(1), gate: new Float64Array(1) }), (e: Error) => /f32/.test(e.message));
});

// A C of 2 MB or more whose tiles are written once (beta = 0, one K block, no update) is stored
// with non-temporal stores on the AVX-512 kernels, row by row where a row of a tile is 32 whole
// columns on a 64-byte boundary (native/cpu/gemm.cc, kStreamCBytes). With ldc = N + 4 the rows fall
// on every 16-byte offset of a line, so streamed and normal rows mix in each C, as do full and
// partial column strips. Bits must equal SEALKIT_STREAM_STORES=0's and values f64's, on every path
// (shared packing, task-packed B strips, task-packed A rows), orientation, f32 and bf16 B, 1-3 threads.
test('gemm: large C written with streaming stores gives the bits of normal stores, against f64', () => {
  const r = rng(31);
  // Shared: 700x760x16. Task-packed B strips: 40x13200x24. Task-packed A rows: 14000x40x12.
  const shapes = [[700, 760, 16], [40, 13200, 24], [14000, 40, 12]];
  const cases = shapes.flatMap(([M, N, K]) =>
    ORIENTS.map(([ta, tb]) => {
      const c = gemmCase(M!, N!, K!, ta, tb, r, 4, 0.75, 0);
      assert.ok(c.M * c.N * 4 >= 2 << 20, 'C must reach the streaming size');
      return { c, bits: bf16Bits(c.B), what: `${M}x${N}x${K} tA=${ta} tB=${tb}` };
    }));
  const runAll = (stream: boolean) => withEnv({ SEALKIT_STREAM_STORES: stream ? '1' : '0' },
    () => cases.flatMap(({ c, bits }) => [gemmRun(c, 'f32'), gemmRun(c, 'f32', { B: bits, bDtype: 'bf16' })]));
  keepingThreads(() => forEachIsa((isa) => {
    addon.setThreads(2);
    const normal = runAll(false);
    cases.forEach(({ c, what }, i) => assertRel(normal[2 * i]!, gemmNaive(c), 1e-5, `${isa} ${what}`));
    for (const threads of [1, 2, 3]) {
      addon.setThreads(threads);
      runAll(true).forEach((streamed, i) => sameBits(streamed, normal[i]!, `${isa} threads=${threads} ${cases[i >> 1]!.what} #${i % 2}`));
    }
  }));
});

// A fused low-rank update on such a C (beta = 0, one K block) is built in a scratch tile and
// streamed out the same way (native/cpu/gemm.cc, update_stream): bits of the base GEMM and the
// update as two calls, and of SEALKIT_STREAM_STORES=0, on each path that fuses (shared packing,
// task-packed B strips, task-packed A rows), NT and NN, f32 and bf16 B, V either way, 1-3 threads.
test('gemm with a low-rank update on a large C: streamed tiles give the bits of the two separate calls', () => {
  const r = rng(35);
  const rank = 16, ldu = rank + 2;
  const cases = [[700, 760, 16], [40, 13200, 24], [14000, 40, 12]].flatMap(([M, N, K]) =>
    [false, true].flatMap((tb) => [false, true].map((transV) => {
      const c = gemmCase(M!, N!, K!, false, tb, r, 4, 0.75, 0);
      assert.ok(c.M * c.N * 4 >= 2 << 20, 'C must reach the streaming size');
      const ldv = (transV ? rank : N!) + 1;
      return {
        c, transV, ldv, bits: bf16Bits(c.B), U: f32(rand(M! * ldu, r)), V: f32(rand((transV ? N! : rank) * ldv, r)),
        what: `${M}x${N}x${K} tB=${tb} tV=${transV}`,
      };
    })));
  const B = (x: (typeof cases)[number], bDtype: 'f32' | 'bf16') => (bDtype === 'bf16' ? x.bits : f32(x.c.B));
  const fusedAll = () => cases.flatMap((x) => (['f32', 'bf16'] as const).map((bDtype) =>
    gemmRun(x.c, 'f32', { B: B(x, bDtype), bDtype, U: x.U, V: x.V, rank, transV: x.transV, ldu, ldv: x.ldv, updateScale: 0.5 })));
  keepingThreads(() => forEachIsa((isa) => {
    addon.setThreads(2);
    const separate = cases.flatMap((x) => (['f32', 'bf16'] as const).map((bDtype) => {
      const base = gemmRun(x.c, 'f32', { B: B(x, bDtype), bDtype });
      return arr(op('gemm', 'f32', {
        M: x.c.M, N: x.c.N, K: rank, A: x.U, lda: ldu, B: x.V, ldb: x.ldv, transB: x.transV, C: base, ldc: x.c.ldc,
        alpha: 0.5, beta: 1,
      }), 'C');
    }));
    const normal = withEnv({ SEALKIT_STREAM_STORES: '0' }, fusedAll);
    normal.forEach((n, i) => sameBits(n, separate[i]!, `${isa} not streamed ${cases[i >> 1]!.what} #${i % 2}`));
    for (const threads of [1, 2, 3]) {
      addon.setThreads(threads);
      fusedAll().forEach((f, i) => sameBits(f, separate[i]!, `${isa} threads=${threads} ${cases[i >> 1]!.what} #${i % 2}`));
    }
  }));
});

// A batch that mixes adapters (SEAL's inner loop: one adapter per sequence) adds each sequence's
// update to its own rows: segments of rows, each with its V and scale, in one gemm_with_update
// (native/cpu/gemm.cc, add_update). Each segment's rows must have the bits of the base GEMM and then
// that segment's own update call on its rows (the calls the model made one by one before), rows
// outside every segment the base GEMM's alone: on every path that fuses (task-packed A rows, shared
// packing, task-packed B strips, streamed tiles of a large C) and where it does not (few rows,
// AVX2: the calls one by one), with tiles that hold the end of one segment and the start of the
// next, one-row segments, gaps, NT and NN, f32 and bf16 B, V either way, 1-3 threads.
type SegmentArgs = { row0: number; rows: number; V: Float32Array; ldv: number; scale: number };
function segmentedCase(M: number, N: number, K: number, transB: boolean, transV: boolean, bounds: [number, number][],
  r: () => number, pad = 3) {
  const rank = 16, ldu = rank + 1;
  const ldv = (transV ? rank : N) + 2;
  const segments: SegmentArgs[] = bounds.map(([row0, rows], i) => ({
    row0, rows, V: f32(rand((transV ? N : rank) * ldv, r)), ldv, scale: 0.25 + 0.125 * (i % 5),
  }));
  return { c: gemmCase(M, N, K, false, transB, r, pad, 0.75, 0), rank, ldu, transV, U: f32(rand(M * ldu, r)), segments };
}
type SegmentedCase = ReturnType<typeof segmentedCase>;

/** The base GEMM, then each segment's update as its own gemm call on its rows. */
function segmentedByCalls(x: SegmentedCase, B: Float32Array | Uint16Array, bDtype: 'f32' | 'bf16'): F {
  const out = gemmRun(x.c, 'f32', { B, bDtype });
  const ldc = x.c.ldc;
  for (const s of x.segments) {
    if (s.rows === 0) continue;
    const rows = out.subarray(s.row0 * ldc, (s.row0 + s.rows) * ldc);
    rows.set(arr(op('gemm', 'f32', {
      M: s.rows, N: x.c.N, K: x.rank, A: x.U.subarray(s.row0 * x.ldu), lda: x.ldu, B: s.V, ldb: s.ldv,
      transB: x.transV, C: Float32Array.from(rows), ldc, alpha: s.scale, beta: 1,
    }), 'C'));
  }
  return out;
}

const segmentedArgs = (x: SegmentedCase) => ({ U: x.U, ldu: x.ldu, rank: x.rank, transV: x.transV, segments: x.segments });

test('gemm with a segmented low-rank update (a batch mixing adapters): each segment the bits of its own call', () => {
  const r = rng(36);
  const every = (M: number, n: number, skip = -1): [number, number][] =>
    Array.from({ length: Math.ceil(M / n) }, (_, i) => [i * n, Math.min(n, M - i * n)] as [number, number]).filter((_, i) => i !== skip);
  // [M, N, K, bounds]: the tiny preset's 16 sequences of 64 rows (task-packed A rows; one sequence
  // without an adapter); shared packing (K 575, odd) with a one-row segment, a segment inside one
  // tile and a gap; a large C (streamed tiles) of 64-row sequences; task-packed B strips (few rows,
  // many columns); 12 rows (the few-rows path: the calls one by one).
  const shapes: [number, number, number, [number, number][]][] = [
    [1024, 384, 128, every(1024, 64, 2)], [300, 200, 575, [[0, 1], [1, 12], [13, 17], [45, 55], [100, 199]]],
    [1100, 600, 24, every(1100, 64)], [40, 13200, 24, [[0, 20], [20, 20]]], [12, 96, 40, [[0, 5], [7, 5]]],
  ];
  const cases = shapes.flatMap(([M, N, K, bounds]) => [false, true].flatMap((transB) => [false, true].map((transV) => ({
    x: segmentedCase(M, N, K, transB, transV, bounds, r), what: `${M}x${N}x${K} tB=${transB} tV=${transV}`,
  }))));
  keepingThreads(() => forEachIsa((isa) => {
    addon.setThreads(2);
    const expected = cases.map(({ x }) => (['f32', 'bf16'] as const).map((bDtype) => {
      const B = bDtype === 'bf16' ? bf16Bits(x.c.B) : f32(x.c.B);
      return { B, bDtype, ref: segmentedByCalls(x, B, bDtype) };
    }));
    for (const threads of [1, 2, 3]) {
      addon.setThreads(threads);
      cases.forEach(({ x, what }, i) => {
        for (const { B, bDtype, ref } of expected[i]!) {
          const label = `${isa} threads=${threads} ${what} ${bDtype}`;
          sameBits(gemmRun(x.c, 'f32', { B, bDtype, ...segmentedArgs(x) }), ref, label);
          if (x.c.M * x.c.N * 4 >= 2 << 20)
            withEnv({ SEALKIT_STREAM_STORES: '0' }, () => sameBits(gemmRun(x.c, 'f32', { B, bDtype, ...segmentedArgs(x) }), ref, `${label} not streamed`));
        }
      });
    }
  }));
});

test('gemm_swiglu_backward with a segmented update: the bits of the calls one by one', () => {
  const r = rng(37);
  const bounds: [number, number][] = Array.from({ length: 16 }, (_, i) => [i * 64, 64] as [number, number]).filter((_, i) => i !== 5);
  const x = segmentedCase(1024, 384, 128, false, false, bounds, r, 0);
  const N = x.c.N, ldc = x.c.ldc;
  const gate = f32(rand(x.c.M * ldc, r).map((v) => 4 * v)), up = f32(rand(x.c.M * ldc, r));
  const W = bf16Bits(x.c.B);
  forEachIsaAndThreadsOnPackedWeights((isa, threads, kernel) => {
    const res = op('gemm_swiglu_backward', 'f32', {
      M: x.c.M, N, K: x.c.K, A: f32(x.c.A), lda: x.c.lda, B: W, ldb: x.c.ldb, bDtype: 'bf16', alpha: x.c.alpha, ldc,
      packedB: true, gate, up, ...segmentedArgs(x),
    });
    const dact = segmentedByCalls(x, W, 'bf16');
    const rows = (v: F) => denseRows(v, x.c.M, N, ldc);
    const ref = op('swiglu_backward', 'f32', { gate: rows(gate), up: rows(up), dout: rows(dact) });
    const label = `${isa} ${kernel} threads=${threads}`;
    assert.is(res.fused, kernel === 'vdpbf16ps' && isa === 'avx512bf16', `${label}: fused`);
    sameBits(rows(arr(res, 'dgate')), arr(ref, 'dgate'), `${label}: dgate`);
    sameBits(rows(arr(res, 'dup')), arr(ref, 'dup'), `${label}: dup`);
  });
});

test('gemm with a segmented low-rank update: argument checks', () => {
  const throwsWith = (fn: () => unknown, re: RegExp) => assert.throws(fn, (e: Error) => re.test(e.message), `expected ${re}`);
  const A = new Float32Array(12), B = new Float32Array(6), U = new Float32Array(8), V = new Float32Array(4);
  const base = { M: 4, N: 2, K: 3, A, B, U, rank: 2 };
  throwsWith(() => op('gemm', 'f32', { ...base, segments: {} }), /'segments' must be an array/);
  throwsWith(() => op('gemm', 'f32', { ...base, segments: [] }), /'segments' must not be empty/);
  throwsWith(() => op('gemm', 'f32', { ...base, segments: [{ row0: 0, rows: 2, V }, { row0: 1, rows: 2, V }] }), /segments\[1\].*ascending and not overlapping/);
  throwsWith(() => op('gemm', 'f32', { ...base, segments: [{ row0: 3, rows: 2, V }] }), /segments\[0\].*C's rows/);
  throwsWith(() => op('gemm', 'f32', { ...base, segments: [{ row0: 0, rows: 2 }] }), /segments\[0\].*'V' is required/);
  throwsWith(() => op('gemm', 'f32', { ...base, segments: [{ row0: 0, rows: 2, V: new Float32Array(3) }] }), /segments\[0\].*'V' has length 3/);
});

test('gemm with a low-rank update: argument checks', () => {
  const throwsWith = (fn: () => unknown, re: RegExp) => assert.throws(fn, (e: Error) => re.test(e.message), `expected ${re}`);
  const A = new Float32Array(6), B = new Float32Array(6), U = new Float32Array(4), V = new Float32Array(4);
  throwsWith(() => op('gemm', 'f32', { M: 2, N: 2, K: 3, A, B, U, V }), /gemm.*'rank' is required/);
  throwsWith(() => op('gemm', 'f32', { M: 2, N: 2, K: 3, A, B, U, V, rank: 3 }), /gemm.*'U' has length 4, expected at least 6/);
  throwsWith(() => op('gemm', 'f32', { M: 2, N: 2, K: 3, A, B, U, V, rank: 2, ldv: 1 }), /gemm.*'ldv' must be >= 2/);
  throwsWith(() => op('gemm', 'f64', { M: 2, N: 2, K: 3, A: new Float64Array(6), B: new Float64Array(6), U, V, rank: 2 }),
    /gemm.*'U'.*f32 only/);
});

/** The bit patterns of an f32 array, for exact comparisons. */
const bitsOf = (x: F) => Array.from(new Uint32Array(Float32Array.from(x).buffer));

test('gemm: every supported ISA agrees on odd shapes, strides, alpha/beta, bf16', () => {
  const r = rng(4);
  const cases = [[1, 130, 65], [3, 70, 33], [7, 33, 1], [33, 7, 130], [65, 130, 33], [130, 65, 7]].flatMap(([M, N, K]) =>
    ORIENTS.map(([ta, tb]) => {
      const c = gemmCase(M!, N!, K!, ta, tb, r, 5, -0.5, 1.25);
      return { c, what: `${M}x${N}x${K} tA=${ta} tB=${tb}`, bits: bf16Bits(c.B), ref: gemmNaive(c) };
    }));
  forEachIsa((isa) => {
    for (const { c, what, bits, ref } of cases) {
      assertRel(gemmRun(c, 'f32'), ref, 1e-5, `${isa} ${what}`);
      assertRel(gemmRun(c, 'f32', { B: bits, bDtype: 'bf16' }), gemmNaiveBf16(c, bits, isa), 1e-5, `${isa} bf16 ${what}`);
    }
  });
});

// A K over twice the slab depth (native/cpu/gemm.cc kSlabSteps = 512 depth steps: 512 k on the f32
// kernels, 1,024 on the bf16-pair ones) runs as K slabs with C += from the second on; a K that is not
// a multiple of the slab or of the K block leaves a short last slab (2825: an odd last pair too).
// AMX tiles split only a K over 8 slabs (8500, its last slab short).
test('gemm: long K (K slabs) against f64, every ISA, all orientations, f32 and bf16 B', () => {
  const r = rng(31);
  const cases = [[37, 70, 2825], [20, 33, 4096], [30, 40, 1300], [18, 40, 8500]].flatMap(([M, N, K]) =>
    ORIENTS.map(([ta, tb]) => {
      const c = gemmCase(M!, N!, K!, ta, tb, r, 3, 0.75, 0.5);
      return { c, what: `${M}x${N}x${K} tA=${ta} tB=${tb}`, bits: bf16Bits(c.B), ref: gemmNaive(c) };
    }));
  forEachIsa((isa) => {
    for (const { c, what, bits, ref } of cases) {
      assertRel(gemmRun(c, 'f32'), ref, 1e-5, `${isa} ${what}`);
      assertRel(gemmRun(c, 'f32', { B: bits, bDtype: 'bf16' }), gemmNaiveBf16(c, bits, isa), 1e-5, `${isa} bf16 ${what}`);
    }
  });
});

// The low-rank paths (f32 B under AVX-512, one of M, N, K at most 32: LoRA's side paths, see
// native/cpu/gemm_lowrank.cc): the six LoRA orientations at ranks around the 16- and 32-lane
// edges, padded strides, alpha/beta, beta = 0 over NaN, padding columns untouched, and the same
// bits on 1 and 2 threads.
test('gemm: low-rank shapes (LoRA side paths) against f64, NaN-safe, thread-count independent', () => {
  const r = rng(11);
  const T = 75, IN = 100, OUT = 130;
  const cases: GemmCase[] = [];
  for (const rank of [1, 8, 15, 16, 17, 32, 33]) {
    cases.push(
      gemmCase(T, rank, IN, false, true, r, 3, 1, 0), //   xa = x A^T
      gemmCase(T, OUT, rank, false, true, r, 2, 0.5, 1), // y += s xa B^T
      gemmCase(OUT, rank, T, true, false, r, 1, 0.5, 1), // dB += s dy^T xa
      gemmCase(T, rank, OUT, false, false, r, 0, 0.5, 0), // dxa = s dy B
      gemmCase(rank, IN, T, true, false, r, 4, 1, 1), //    dA += dxa^T x
      gemmCase(rank, IN, T, true, false, r, 2, 0.5, 0), //  dA = dxa^T x (C not read)
      gemmCase(OUT, rank, T, true, false, r, 3, 1, 0), //   dB = dy^T xa (C not read)
      gemmCase(T, IN, rank, false, false, r, 1, 1, 1), //   dx += dxa A
      gemmCase(rank, IN, T, false, false, r, 2, -1, 0.25), // narrow M, A not transposed
      gemmCase(T, IN, rank, true, true, r, 1, 1, 0.5), //   narrow K, both transposed
    );
  }
  keepingThreads(() => {
    for (const threads of [1, 2]) {
      addon.setThreads(threads);
      for (const c of cases) {
        const tag = `${c.M}x${c.N}x${c.K} tA=${c.transA} tB=${c.transB} threads=${threads}`;
        assertRel(gemmRun(c, 'f32'), gemmNaive(c), 1e-5, tag);
        if (c.beta === 0) {
          const nan = { ...c, C: Float64Array.from(c.C, (x, i) => (i % c.ldc < c.N ? NaN : x)) };
          const out = gemmRun(nan, 'f32');
          const ref = gemmNaive(c);
          for (let i = 0; i < out.length; i++) {
            if (i % c.ldc < c.N) assert.ok(Math.abs(out[i]! - ref[i]!) < 1e-3, `${tag}: NaN in C leaked (${out[i]})`);
            else assert.is(out[i], Math.fround(c.C[i]!), `${tag}: padding column`);
          }
        }
      }
    }
    addon.setThreads(1);
    const one = cases.map((c) => gemmRun(c, 'f32'));
    addon.setThreads(2);
    cases.forEach((c, i) => sameBits(one[i]!, gemmRun(c, 'f32'), `case ${i}`));
  });
});

// The bf16 path (bf16 B under avx512bf16): A rounded to bf16 (round to nearest even), B's bf16
// pairs as stored, f32 accumulation, on AMX tiles where the CPU has them and on vdpbf16ps otherwise
// or with SEALKIT_AMX=0 (both are run). Every product of two bf16 values is exact in f32, so the
// only error against the f64 reference on the rounded A is f32 accumulation over K, the same as the
// f32 kernels' (1e-5 of the norm, as above). Shapes cover the few-rows path (M <= 4, y = x W^T), odd
// K (the last pair zero-padded), K across K blocks (256 k for vdpbf16ps, up to 768 k for AMX: 1601),
// edge tiles (M, N not multiples of 14 or 32), strides and alpha/beta in every orientation.
const BF16_SHAPES: [number, number, number][] = [
  [1, 70, 1], [2, 33, 3], [3, 130, 65], [4, 97, 600], [5, 7, 3], [6, 130, 600], [7, 33, 65], [8, 97, 257],
  [8, 40, 1601], [9, 33, 65], [15, 33, 31], [29, 65, 257], [30, 64, 33], [45, 97, 513], [70, 40, 300], [33, 40, 1601],
];

/** Runs fn with the AMX kernel allowed (the default) and then with SEALKIT_AMX=0 (vdpbf16ps). */
function eachBf16Kernel(fn: (kernel: string) => void): void {
  const saved = process.env.SEALKIT_AMX;
  try {
    for (const kernel of ['amx', 'vdpbf16ps']) {
      if (kernel === 'amx') delete process.env.SEALKIT_AMX;
      else process.env.SEALKIT_AMX = '0';
      fn(kernel);
    }
  } finally {
    if (saved === undefined) delete process.env.SEALKIT_AMX;
    else process.env.SEALKIT_AMX = saved;
  }
}

// LoRA's weight gradients (dA = dxa^T x, dB = dy^T xa) walk the tokens in blocks of 64, each
// tile's sums carried from block to block (native/cpu/gemm_lowrank.cc): token counts across the
// block edges, against f64, with the same bits on 1, 2 and 3 threads.
test('gemm: LoRA weight gradients over several token blocks against f64, thread-count independent', () => {
  const r = rng(26);
  const IN = 70, OUT = 97;
  const cases: GemmCase[] = [];
  for (const T of [63, 65, 129, 300])
    for (const rank of [8, 16, 17]) {
      cases.push(
        gemmCase(rank, IN, T, true, false, r, 2, 1, 1), //   dA += dxa^T x
        gemmCase(OUT, rank, T, true, false, r, 1, 0.5, 0), // dB = s dy^T xa
      );
    }
  keepingThreads(() => {
    const results = new Map<number, F[]>();
    for (const threads of [1, 2, 3]) {
      addon.setThreads(threads);
      results.set(threads, cases.map((c) => gemmRun(c, 'f32')));
    }
    cases.forEach((c, i) => {
      const tag = `${c.M}x${c.N}x${c.K}`;
      assertRel(results.get(1)![i]!, gemmNaive(c), 1e-5, tag);
      for (const threads of [2, 3]) sameBits(results.get(1)![i]!, results.get(threads)![i]!, `${tag} threads=${threads}`);
    });
  });
});

test('gemm: bf16 B under avx512bf16 equals f64 on A rounded to bf16 (AMX, vdpbf16ps), all orientations', () => {
  if (!supportedIsas().includes('avx512bf16')) return;
  const r = rng(40);
  keepingIsa(() => {
    eachBf16Kernel((kernel) => {
      for (const [M, N, K] of BF16_SHAPES) {
        for (const [ta, tb] of ORIENTS) {
          for (const [alpha, beta] of [[1, 0], [-0.75, 1.5]] as const) {
            const c = gemmCase(M, N, K, ta, tb, r, 3, alpha, beta);
            if (beta === 0) c.C.fill(NaN);  // beta = 0 must not read C
            const bits = bf16Bits(c.B);
            const ref = gemmNaiveBf16(c, bits, 'avx512bf16');
            addon.setIsa('avx512bf16');
            const out = gemmRun(c, 'f32', { B: bits, bDtype: 'bf16' });
            const what = `${kernel} ${M}x${N}x${K} tA=${ta} tB=${tb} alpha=${alpha} beta=${beta}`;
            // Only the M x N block is the product; padding columns of C keep their old values.
            const inner = (x: ArrayLike<number>) => Float64Array.from({ length: M * N }, (_, q) => x[Math.floor(q / N) * c.ldc + (q % N)]!);
            assertRel(inner(out), inner(ref), 1e-5, what);
            for (let i = 0; i < M; i++) for (let j = N; j < c.ldc; j++) assert.ok(Number.isNaN(c.C[i * c.ldc + j]!) ? Number.isNaN(out[i * c.ldc + j]!) : out[i * c.ldc + j] === Math.fround(c.C[i * c.ldc + j]!), `${what}: padding`);
            // The unrounded A is measurably different: the bf16 path really ran (K > 1 so rounding shows).
            if (K >= 31) assert.ok(relErr(inner(out), inner(gemmNaive(c, Float64Array.from(bits, fromBf16)))) > 1e-4, `${what}: A not rounded?`);
          }
        }
      }
    });
  });
});

test('gemm: bf16 B falls back to the f32 kernels below avx512bf16; f32 B bits do not depend on bf16 support', () => {
  const isas = supportedIsas().filter((i) => i !== 'scalar');
  if (!isas.includes('avx512')) return;
  const r = rng(41);
  keepingIsa(() => {
    for (const [M, N, K] of [[1, 70, 33], [4, 97, 65], [29, 65, 257], [45, 97, 513]] as const) {
      for (const [ta, tb] of ORIENTS) {
        const c = gemmCase(M, N, K, ta, tb, r, 3, 0.5, 0.25);
        const bits = bf16Bits(c.B);
        const widened = f32(Array.from(bits, fromBf16));
        const what = `${M}x${N}x${K} tA=${ta} tB=${tb}`;
        // avx512 widens bf16 while packing (or streaming): exactly the f32 GEMM of the widened values.
        addon.setIsa('avx512');
        const oldBf = gemmRun(c, 'f32', { B: bits, bDtype: 'bf16' });
        sameBits(oldBf, gemmRun(c, 'f32', { B: widened }), `avx512 bf16 vs widened f32 ${what}`);
        const f32Old = gemmRun(c, 'f32');
        if (isas.includes('avx512bf16')) {
          addon.setIsa('avx512bf16');
          sameBits(gemmRun(c, 'f32'), f32Old, `f32 B avx512bf16 vs avx512 ${what}`);
          sameBits(gemmRun(c, 'f32', { B: widened }), oldBf, `widened f32 B avx512bf16 vs avx512 ${what}`);
        }
      }
    }
  });
});

test('gemm: bf16 B under avx512bf16 gives the same bits with 1 and 2 threads', () => {
  if (!supportedIsas().includes('avx512bf16')) return;
  const r = rng(42);
  const cases = [
    gemmCase(150, 200, 300, false, true, r, 1, 1, 0.5), gemmCase(150, 200, 601, false, false, r, 0, 1, 0),
    gemmCase(3, 900, 577, false, true, r, 2, 1, 0), gemmCase(100, 130, 45, true, false, r, 1, 2, 1),
    gemmCase(70, 100, 1601, false, false, r, 0, 1, 1),
  ];
  const runAll = () => cases.map((c) => gemmRun(c, 'f32', { B: bf16Bits(c.B), bDtype: 'bf16' }));
  forEachIsa(() => {
    eachBf16Kernel((kernel) => {
      let one: F[] = [];
      forEachThreadCount([1, 2], (threads) => {
        const out = runAll();
        if (threads === 1) one = out;
        else one.forEach((o, i) => sameBits(o, out[i]!, `${kernel} case ${i}`));
      });
    });
  }, ['avx512bf16']);
});

// ---- embedding ------------------------------------------------------------------------------------

test('embedding: forward gathers rows (f32, bf16, f64); backward sums repeated ids (finite differences)', () => {
  const r = rng(5);
  const vocab = 11, dim = 6;
  const ids = i32([3, 0, 3, 10, 7, 3, 0]);
  const table = rand(vocab * dim, r);
  const ref = new Float64Array(ids.length * dim);
  ids.forEach((id, i) => { for (let j = 0; j < dim; j++) ref[i * dim + j] = table[id * dim + j]!; });
  assert.equal(Array.from(arr(op('embedding_forward', 'f64', { ids, table, vocab, dim }), 'out')), Array.from(ref));
  assert.equal(Array.from(arr(op('embedding_forward', 'f32', { ids, table: f32(table), vocab, dim }), 'out')), Array.from(ref));
  const bits = bf16Bits(table);
  assert.equal(Array.from(arr(op('embedding_forward', 'f32', { ids, table: bits, tableDtype: 'bf16', vocab, dim }), 'out')),
    Array.from(ids).flatMap((id) => Array.from(bits.subarray(id * dim, id * dim + dim), fromBf16)));

  gradCheck('embedding', { table },
    (x) => [d64(op('embedding_forward', 'f64', { ids, table: x.table, vocab, dim }), 'out')],
    (_x, [w]) => ({ table: d64(op('embedding_backward', 'f64', { ids, dout: w, vocab, dim }), 'dtable') }));

  const init = rand(vocab * dim, r);
  const dout = rand(ids.length * dim, r);
  assertRel(arr(op('embedding_backward', 'f32', { ids, dout: f32(dout), vocab, dim }), 'dtable'),
    d64(op('embedding_backward', 'f64', { ids, dout, vocab, dim }), 'dtable'), 1e-7, 'f32 backward');
  const acc = d64(op('embedding_backward', 'f64', { ids, dout, vocab, dim, dtable: init }), 'dtable');
  const plain = d64(op('embedding_backward', 'f64', { ids, dout, vocab, dim }), 'dtable');
  assertRel(acc, init.map((v, i) => v + plain[i]!), 1e-15, 'dtable accumulates onto its initial value');
});

// ---- RMSNorm --------------------------------------------------------------------------------------

test('rmsnorm: forward against a naive loop; f32 vs f64; dx and dw by finite differences', () => {
  const r = rng(6);
  const rows = 5, dim = 24, eps = 1e-5;
  const x = rand(rows * dim, r, 2);
  const w = rand(dim, r);
  const ref = new Float64Array(rows * dim);
  for (let i = 0; i < rows; i++) {
    let ss = 0;
    for (let j = 0; j < dim; j++) ss += x[i * dim + j]! ** 2;
    const rs = 1 / Math.sqrt(ss / dim + eps);
    for (let j = 0; j < dim; j++) ref[i * dim + j] = x[i * dim + j]! * rs * w[j]!;
  }
  const y64 = arr(op('rmsnorm_forward', 'f64', { x, w, rows, dim, eps }), 'y');
  assertRel(y64, ref, 1e-14, 'f64 forward');
  assertRel(arr(op('rmsnorm_forward', 'f32', { x: f32(x), w: f32(w), rows, dim, eps }), 'y'), ref, 1e-6, 'f32 forward');

  const fwd = (v: Record<string, Float64Array>) => [d64(op('rmsnorm_forward', 'f64', { x: v.x, w: v.w, rows, dim, eps }), 'y')];
  gradCheck('rmsnorm', { x, w }, fwd, (v, [dy]) => {
    const rstd = arr(op('rmsnorm_forward', 'f64', { x: v.x, w: v.w, rows, dim, eps }), 'rstd');
    const g = op('rmsnorm_backward', 'f64', { x: v.x, w: v.w, rstd, dy, rows, dim });
    return { x: d64(g, 'dx'), w: d64(g, 'dw') };
  });

  // f32 backward against f64, and "+=" accumulation into dx / dw.
  const dy = rand(rows * dim, r);
  const rstd64 = arr(op('rmsnorm_forward', 'f64', { x, w, rows, dim, eps }), 'rstd');
  const g64 = op('rmsnorm_backward', 'f64', { x, w, rstd: rstd64, dy, rows, dim });
  const rstd32 = arr(op('rmsnorm_forward', 'f32', { x: f32(x), w: f32(w), rows, dim, eps }), 'rstd');
  const g32 = op('rmsnorm_backward', 'f32', { x: f32(x), w: f32(w), rstd: rstd32, dy: f32(dy), rows, dim });
  assertRel(arr(g32, 'dx'), arr(g64, 'dx'), 1e-5, 'f32 dx');
  assertRel(arr(g32, 'dw'), arr(g64, 'dw'), 1e-5, 'f32 dw');
  const dx0 = rand(rows * dim, r);
  const dw0 = rand(dim, r);
  const acc = op('rmsnorm_backward', 'f64', { x, w, rstd: rstd64, dy, rows, dim, dx: dx0, dw: dw0 });
  assertRel(arr(acc, 'dx'), dx0.map((v, i) => v + arr(g64, 'dx')[i]!), 1e-14, 'dx +=');
  assertRel(arr(acc, 'dw'), dw0.map((v, i) => v + arr(g64, 'dw')[i]!), 1e-14, 'dw +=');
  const frozen = op('rmsnorm_backward', 'f64', { x, w, rstd: rstd64, dy, rows, dim, computeDw: false });
  assert.is(frozen.dw, undefined, 'no dw when the weight is frozen');
  assertRel(arr(frozen, 'dx'), arr(g64, 'dx'), 0, 'dx without dw');
});

// The f32 rows run at the active ISA's vector width (SEALKIT_DISPATCH): every ISA against f64, with
// widths that leave vector tails, accumulating into dx, on 1 and 2 threads (same bits).
// The residual add and the next norm in one pass (a pre-norm decoder's x += sublayer(x); norm(x)):
// the bits of axpy(x, r, 1) and rmsnorm_forward in sequence, f32 (every ISA, 1 and 3 threads) and f64.
test('rmsnorm_forward with a residual (residual_rmsnorm_forward): the bits of axpy then rmsnorm_forward', () => {
  const r = rng(62);
  for (const [rows, dim] of [[1, 1], [3, 7], [17, 133], [300, 576]] as const) {
    const x = rand(rows * dim, r, 2), res = rand(rows * dim, r), w = rand(dim, r), eps = 1e-6;
    for (const dtype of ['f32', 'f64'] as const) {
      const cv = dtype === 'f32' ? f32 : (a: Float64Array) => a;
      const check = (tag: string) => {
        const sum = arr(op('axpy', dtype, { y: cv(x), x: cv(res), a: 1 }), 'y');
        const norm = op('rmsnorm_forward', dtype, { x: sum, w: cv(w), rows, dim, eps });
        const fused = op('rmsnorm_forward', dtype, { x: cv(x), r: cv(res), w: cv(w), rows, dim, eps });
        sameBits(arr(fused, 'x'), sum, `${tag} x`);
        sameBits(arr(fused, 'y'), arr(norm, 'y'), `${tag} y`);
        sameBits(arr(fused, 'rstd'), arr(norm, 'rstd'), `${tag} rstd`);
      };
      forEachIsa((isa) => keepingThreads(() => {
        for (const threads of [1, 3]) {
          addon.setThreads(threads);
          check(`${rows}x${dim} ${dtype} ${isa} threads=${threads}`);
        }
      }));
    }
  }
});

test('rmsnorm f32: every ISA against f64, vector tails, thread-count independent', () => {
  const r = rng(61);
  for (const [rows, dim] of [[3, 7], [17, 133], [40, 576]] as const) {
    const x = rand(rows * dim, r, 2), w = rand(dim, r), dy = rand(rows * dim, r), dx0 = rand(rows * dim, r);
    const eps = 1e-6;
    const y64 = arr(op('rmsnorm_forward', 'f64', { x, w, rows, dim, eps }), 'y');
    const rstd64 = arr(op('rmsnorm_forward', 'f64', { x, w, rows, dim, eps }), 'rstd');
    const dx64 = arr(op('rmsnorm_backward', 'f64', { x, w, rstd: rstd64, dy, rows, dim, dx: dx0, computeDw: false }), 'dx');
    forEachIsa((isa) => {
      const run = () => {
        const f = op('rmsnorm_forward', 'f32', { x: f32(x), w: f32(w), rows, dim, eps });
        const b = op('rmsnorm_backward', 'f32', { x: f32(x), w: f32(w), rstd: arr(f, 'rstd'), dy: f32(dy), rows, dim, dx: f32(dx0), computeDw: false });
        return { y: arr(f, 'y'), dx: arr(b, 'dx') };
      };
      const tag = `${rows}x${dim} ${isa}`;
      keepingThreads(() => {
        addon.setThreads(1);
        const one = run();
        addon.setThreads(2);
        const two = run();
        assertRel(one.y, y64, 1e-6, `${tag} y`);
        assertRel(one.dx, dx64, 1e-5, `${tag} dx +=`);
        sameBits(one.y, two.y, `${tag} y threads`);
        sameBits(one.dx, two.dx, `${tag} dx threads`);
      });
    });
  }
});

// ---- RoPE -----------------------------------------------------------------------------------------

/** Llama 3 frequency scaling (factor 8, low 1, high 4, original context 8192) on base 500000. */
function llama3InvFreq(headDim: number): Float32Array {
  const out = new Float32Array(headDim / 2);
  const factor = 8, low = 1, high = 4, orig = 8192;
  for (let i = 0; i < headDim / 2; i++) {
    const f = 1 / 500000 ** ((2 * i) / headDim);
    const wavelen = (2 * Math.PI) / f;
    let g = f;
    if (wavelen > orig / low) g = f / factor;
    else if (wavelen >= orig / high) {
      const smooth = (orig / wavelen - low) / (high - low);
      g = (1 - smooth) * (f / factor) + smooth * f;
    }
    out[i] = g;
  }
  return out;
}

function ropeNaive(x: Float64Array, rows: number, stride: number, heads: number, hd: number, pos: Int32Array,
  inv: Float32Array, f32Angle: boolean): Float64Array {
  const out = Float64Array.from(x);
  const half = hd / 2;
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < half; i++) {
        const ang = f32Angle ? Math.fround(pos[r]! * inv[i]!) : pos[r]! * inv[i]!;
        const a = x[r * stride + h * hd + i]!, b = x[r * stride + h * hd + half + i]!;
        out[r * stride + h * hd + i] = a * Math.cos(ang) - b * Math.sin(ang);
        out[r * stride + h * hd + half + i] = b * Math.cos(ang) + a * Math.sin(ang);
      }
    }
  }
  return out;
}

test('rope: rotate-half against a naive loop (llama3 inv_freq); f32 angle semantics; backward by finite differences', () => {
  const r = rng(7);
  const rows = 6, heads = 3, hd = 16, stride = heads * hd + 5;
  const inv = llama3InvFreq(hd);
  const positions = i32([0, 1, 2, 17, 40, 63]);
  const x = rand(rows * stride, r);
  const args = { rows, heads, headDim: hd, rowStride: stride, positions, invFreq: inv };
  assertRel(arr(op('rope_forward', 'f64', { ...args, x }), 'x'), ropeNaive(x, rows, stride, heads, hd, positions, inv, false), 1e-14, 'f64 forward');
  // f32 vs f64 with positions < 64 (angle rounding in f32 grows with the position).
  assertRel(arr(op('rope_forward', 'f32', { ...args, x: f32(x) }), 'x'), ropeNaive(x, rows, stride, heads, hd, positions, inv, false), 1e-5, 'f32 vs f64');
  // Large positions: the f32 kernel forms the angle in f32 like HF, so it tracks a reference that rounds the angle.
  const far = i32([1000, 4095, 8191, 20000, 65535, 131071]);
  const farArgs = { ...args, positions: far, x: f32(x) };
  assertRel(arr(op('rope_forward', 'f32', farArgs), 'x'), ropeNaive(x, rows, stride, heads, hd, far, inv, true), 1e-5, 'f32 angle rounding');
  // The same positions with other frequencies (the kernel keeps the last cos/sin table): recomputed.
  const inv2 = inv.map((f) => f * 0.5);
  assertRel(arr(op('rope_forward', 'f32', { ...farArgs, invFreq: inv2 }), 'x'), ropeNaive(x, rows, stride, heads, hd, far, inv2, true), 1e-5, 'f32, new frequencies');
  // Padding columns past heads*headDim stay as they were.
  const y = arr(op('rope_forward', 'f64', { ...args, x }), 'x');
  for (let rr = 0; rr < rows; rr++) for (let j = heads * hd; j < stride; j++) assert.is(y[rr * stride + j], x[rr * stride + j]);

  assertRel(arr(op('rope_backward', 'f32', { ...args, dx: f32(x) }), 'dx'), arr(op('rope_backward', 'f64', { ...args, dx: x }), 'dx'), 1e-5, 'f32 backward');

  gradCheck('rope', { x },
    (v) => [d64(op('rope_forward', 'f64', { ...args, x: v.x }), 'x')],
    (_v, [dy]) => ({ x: d64(op('rope_backward', 'f64', { ...args, dx: dy }), 'dx') }));
});

// ---- attention ------------------------------------------------------------------------------------

interface AttnCase {
  rows: number; heads: number; kvHeads: number; headDim: number; qStride: number; kvStride: number; scale: number;
  seqStart: Int32Array; seqLen: Int32Array; q: Float64Array; k: Float64Array; v: Float64Array;
}

// headDim 20 by default: one full 16-lane block plus a scalar tail in the kernels' tiles.
function attnCase(lens: number[], r: () => number, heads = 4, kvHeads = 2, headDim = 20): AttnCase {
  // One uncovered row between sequences: the kernels must leave it alone.
  const seqStart: number[] = [];
  let row = 0;
  for (const l of lens) { seqStart.push(row); row += l + 1; }
  const qStride = heads * headDim + 3, kvStride = kvHeads * headDim + 2;
  return {
    rows: row, heads, kvHeads, headDim, qStride, kvStride, scale: 1 / Math.sqrt(headDim),
    seqStart: i32(seqStart), seqLen: i32(lens),
    q: rand(row * qStride, r), k: rand(row * kvStride, r), v: rand(row * kvStride, r),
  };
}

const attnShape = (c: AttnCase) => ({
  rows: c.rows, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, qStride: c.qStride, kvStride: c.kvStride,
  scale: c.scale, seqStart: c.seqStart, seqLen: c.seqLen,
});

function attnNaive(c: AttnCase): { out: Float64Array; lse: Float64Array } {
  const D = c.headDim, group = c.heads / c.kvHeads;
  const out = new Float64Array(c.rows * c.heads * D), lse = new Float64Array(c.rows * c.heads);
  for (let s = 0; s < c.seqStart.length; s++) {
    const st = c.seqStart[s]!, L = c.seqLen[s]!;
    for (let h = 0; h < c.heads; h++) {
      const kh = Math.floor(h / group);
      for (let t = 0; t < L; t++) {
        const sc: number[] = [];
        for (let j = 0; j <= t; j++) {
          let d = 0;
          for (let e = 0; e < D; e++) d += c.q[(st + t) * c.qStride + h * D + e]! * c.k[(st + j) * c.kvStride + kh * D + e]!;
          sc.push(d * c.scale);
        }
        const m = Math.max(...sc);
        const p = sc.map((x) => Math.exp(x - m));
        const sum = p.reduce((a, b) => a + b, 0);
        lse[(st + t) * c.heads + h] = m + Math.log(sum);
        for (let e = 0; e < D; e++) {
          let o = 0;
          for (let j = 0; j <= t; j++) o += p[j]! * c.v[(st + j) * c.kvStride + kh * D + e]!;
          out[(st + t) * c.heads * D + h * D + e] = o / sum;
        }
      }
    }
  }
  return { out, lse };
}

// Head sizes: 20 (one 16-lane block and a tail), 32 and 64 (whole pairs of 16-lane blocks, which
// AVX-512 runs two at a time), 40 (a pair and a tail).
test('attention: forward against a naive softmax (GQA, packed sequences incl. length 1, strides); f32 vs f64', () => {
  const r = rng(8);
  for (const hd of [20, 32, 40, 64]) {
    const c = attnCase([1, 5, 40, 70], r, 4, 2, hd);
    const ref = attnNaive(c);
    const r64 = op('attention_forward', 'f64', { ...attnShape(c), q: c.q, k: c.k, v: c.v });
    assertRel(arr(r64, 'out'), ref.out, 1e-13, `f64 out, head ${hd}`);
    assertRel(arr(r64, 'lse'), ref.lse, 1e-13, `f64 lse, head ${hd}`);
    // Every ISA: the tiles run at its vector width and the softmax through its exp routines.
    forEachIsa((isa) => {
      const r32 = op('attention_forward', 'f32', { ...attnShape(c), q: f32(c.q), k: f32(c.k), v: f32(c.v) });
      assertRel(arr(r32, 'out'), ref.out, 2e-6, `f32 out, head ${hd}, ${isa}`);
      assertRel(arr(r32, 'lse'), ref.lse, 2e-6, `f32 lse, head ${hd}, ${isa}`);
    });
  }
});

// GQA 4/2 at lengths 1, 3, 35; and 5 query heads per kv head across two 64-query blocks (dk and dv
// add up every head of the group in every block). The f32 test below compares with the f64 path,
// which shares the kernel's structure: only these finite differences check that structure itself.
test('attention: backward by finite differences (GQA 4/2, lengths 1, 3, 35; GQA 10/2, lengths 3, 70)', () => {
  const r = rng(9);
  for (const c of [attnCase([1, 3, 35], r), attnCase([3, 70], r, 10, 2, 8)]) {
    const shape = attnShape(c);
    gradCheck('attention', { q: c.q, k: c.k, v: c.v },
      (x) => [d64(op('attention_forward', 'f64', { ...shape, q: x.q, k: x.k, v: x.v }), 'out')],
      (x, [dout]) => {
        const f = op('attention_forward', 'f64', { ...shape, q: x.q, k: x.k, v: x.v });
        const g = op('attention_backward', 'f64', { ...shape, q: x.q, k: x.k, v: x.v, out: arr(f, 'out'), lse: arr(f, 'lse'), dout });
        return { q: d64(g, 'dq'), k: d64(g, 'dk'), v: d64(g, 'dv') };
      }, { maxChecks: 80 });
  }
});

// Lengths across the backward pass's 64-query blocks (130: two whole blocks and a partial one);
// head sizes that take the 16 x 16 transposes (16, 32, 64) or not (20, 40), and 20 leaves a
// remainder after the dk/dv tiles' 8 rows.
test('attention: f32 backward agrees with f64 on every ISA; untouched padding and uncovered rows', () => {
  const r = rng(10);
  for (const hd of [16, 20, 32, 40, 64]) {
    const c = attnCase([2, 33, 130], r, 6, 3, hd);
    const shape = attnShape(c);
    const dout = rand(c.rows * c.heads * c.headDim, r);
    const run = (dtype: Dtype) => {
      const cv = dtype === 'f32' ? f32 : (a: Float64Array) => a;
      const f = op('attention_forward', dtype, { ...shape, q: cv(c.q), k: cv(c.k), v: cv(c.v) });
      const fill = (n: number) => cv(new Float64Array(n).fill(5));
      return op('attention_backward', dtype, {
        ...shape, q: cv(c.q), k: cv(c.k), v: cv(c.v), out: arr(f, 'out'), lse: arr(f, 'lse'), dout: cv(dout),
        dq: fill(c.q.length), dk: fill(c.k.length), dv: fill(c.v.length),
      });
    };
    const g64 = run('f64');
    forEachIsa((isa) => {
      const g32 = run('f32');
      for (const k of ['dq', 'dk', 'dv']) assertRel(arr(g32, k), arr(g64, k), 1e-5, `f32 ${k}, head ${hd}, ${isa}`);
    });
    const dq = arr(g64, 'dq');
    const gap = c.seqStart[1]! - 1; // the uncovered row after sequence 0
    for (let j = 0; j < c.qStride; j++) assert.is(dq[gap * c.qStride + j], 5, 'uncovered row untouched');
    for (let j = c.heads * c.headDim; j < c.qStride; j++) assert.is(dq[j], 5, 'padding column untouched');
  }
});

test('attention_bench: one time per call, forward and backward, and the kernels\' own results', () => {
  // bench/ab.ts's ATTN shapes time attention through attention_bench.
  const r = rng(31);
  const c = attnCase([5, 40], r, 4, 2, 16);
  const shape = attnShape(c);
  const dout = f32(rand(c.rows * c.heads * c.headDim, r));
  const q = f32(c.q), k = f32(c.k), v = f32(c.v);
  const f = op('attention_forward', 'f32', { ...shape, q, k, v });
  const b = op('attention_backward', 'f32', { ...shape, q, k, v, out: arr(f, 'out'), lse: arr(f, 'lse'), dout });
  const bench = addon.opRun('attention_bench', 'f32', { ...shape, q, k, v, dout, iters: 3 }) as unknown as Record<string, Float64Array | Float32Array>;
  for (const pass of ['forward', 'backward']) {
    assert.is(bench[pass]!.length, 3, `${pass} times`);
    for (const t of bench[pass]!) assert.ok(t > 0 && t < 10, `${pass} time ${t}`);
  }
  sameBits(bench.out as Float32Array, arr(f, 'out') as Float32Array, 'out');
  for (const key of ['dq', 'dk', 'dv']) {
    // The op's outputs start from zero or the given arrays; the bench's scratch from zero. Rows no
    // sequence covers stay zero in both here.
    sameBits(bench[key] as Float32Array, arr(b, key) as Float32Array, key);
  }
  assert.throws(() => addon.opRun('attention_bench', 'f32', { ...shape, q, k, v, dout, iters: 0 }), /iters/);
  assert.throws(() => addon.opRun('attention_bench', 'f32', { ...shape, q, k, v }), /dout/);
});

// ---- SwiGLU ---------------------------------------------------------------------------------------

test('swiglu: forward against a naive loop; f32 vs f64; backward by finite differences', () => {
  const r = rng(11);
  const n = 600; // crosses the kernel's 256-element chunks
  const gate = rand(n, r, 6), up = rand(n, r, 2);
  gate[0] = -100; gate[1] = 100; // saturated sigmoid
  const ref = gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]!);
  assertRel(arr(op('swiglu_forward', 'f64', { gate, up }), 'out'), ref, 1e-15, 'f64 forward');
  assertRel(arr(op('swiglu_forward', 'f32', { gate: f32(gate), up: f32(up) }), 'out'), ref, 1e-6, 'f32 forward');
  const g64 = op('swiglu_backward', 'f64', { gate, up, dout: up });
  const g32 = op('swiglu_backward', 'f32', { gate: f32(gate), up: f32(up), dout: f32(up) });
  assertRel(arr(g32, 'dgate'), arr(g64, 'dgate'), 1e-6, 'f32 dgate');
  assertRel(arr(g32, 'dup'), arr(g64, 'dup'), 1e-6, 'f32 dup');
  gradCheck('swiglu', { gate, up },
    (x) => [d64(op('swiglu_forward', 'f64', { gate: x.gate, up: x.up }), 'out')],
    (x, [dout]) => {
      const g = op('swiglu_backward', 'f64', { gate: x.gate, up: x.up, dout });
      return { gate: d64(g, 'dgate'), up: d64(g, 'dup') };
    }, { maxChecks: 100 });
});

// ---- cross-entropy --------------------------------------------------------------------------------

function ceNaive(logits: Float64Array, targets: Int32Array, vocab: number): Float64Array {
  const loss = new Float64Array(targets.length);
  targets.forEach((t, r) => {
    if (t < 0) return;
    const row = logits.subarray(r * vocab, (r + 1) * vocab);
    const m = Math.max(...row);
    let s = 0;
    for (const x of row) s += Math.exp(x - m);
    loss[r] = m + Math.log(s) - row[t]!;
  });
  return loss;
}

test('cross-entropy: loss against a naive loop (ignored targets); gradient by finite differences', () => {
  const r = rng(12);
  const rows = 6, vocab = 9;
  const logits = rand(rows * vocab, r, 4);
  const targets = i32([2, -1, 8, 0, 5, -1]);
  const gradScale = Float64Array.from([0.5, 1, 0, 2, 1, 1]);
  const res = op('cross_entropy', 'f64', { logits, targets, rows, vocab, gradScale });
  assertRel(arr(res, 'loss'), ceNaive(logits, targets, vocab), 1e-15, 'loss');
  const grad = arr(res, 'grad');
  for (const rr of [1, 2, 5]) for (let j = 0; j < vocab; j++) assert.is(grad[rr * vocab + j], 0, `row ${rr} gradient is zero`);
  // The kernel's gradient is d(sum_r gradScale[r] * loss[r]) / dlogits.
  gradCheck('cross_entropy', { logits },
    (x) => {
      const l = d64(op('cross_entropy', 'f64', { logits: x.logits, targets, rows, vocab }), 'loss');
      return [l.map((v, i) => v * gradScale[i]!)];
    },
    (x, [w]) => {
      const scale = w!.map((v, i) => v * gradScale[i]!);
      return { logits: d64(op('cross_entropy', 'f64', { logits: x.logits, targets, rows, vocab, gradScale: scale }), 'grad') };
    });
  const noGrad = op('cross_entropy', 'f64', { logits, targets, rows, vocab });
  assert.is(noGrad.grad, undefined, 'no gradient without gradScale');
});

test('cross-entropy: f32 vs f64 over a large vocabulary whose max sits in a late block', () => {
  const r = rng(13);
  const rows = 4, vocab = 7001;
  const logits = rand(rows * vocab, r, 3);
  logits[0 * vocab + 6500] = 30; // max found late: the running sum is rescaled
  logits[1 * vocab + 0] = 25;
  logits[2 * vocab + 3000] = -40;
  const targets = i32([6500, 17, 7000, 4000]);
  const gradScale = Float64Array.from([1, 0.25, 1, 3]);
  const r64 = op('cross_entropy', 'f64', { logits, targets, rows, vocab, gradScale });
  const r32 = op('cross_entropy', 'f32', { logits: f32(logits), targets, rows, vocab, gradScale: f32(gradScale) });
  assertRel(arr(r64, 'loss'), ceNaive(logits, targets, vocab), 1e-12, 'f64 loss');
  assertRel(arr(r32, 'loss'), arr(r64, 'loss'), 1e-6, 'f32 loss');
  assertRel(arr(r32, 'grad'), arr(r64, 'grad'), 1e-6, 'f32 gradient');
});

// ---- AdamW and reductions -------------------------------------------------------------------------

test('adamw: several steps against a hand-computed PyTorch AdamW (bias correction, decoupled decay)', () => {
  const r = rng(14);
  const n = 50;
  const hp = { lr: 0.01, beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0.1 };
  const p0 = rand(n, r);
  for (const dtype of ['f64', 'f32'] as const) {
    const cv = dtype === 'f32' ? f32 : (a: Float64Array) => a;
    let param: F = cv(p0), m: F = cv(new Float64Array(n)), v: F = cv(new Float64Array(n));
    const rp = Float64Array.from(p0), rm = new Float64Array(n), rv = new Float64Array(n);
    for (let step = 1; step <= 4; step++) {
      const grad = rand(n, r);
      const out = op('adamw', dtype, { param, grad: cv(grad), m, v, ...hp, step });
      param = arr(out, 'param'); m = arr(out, 'm'); v = arr(out, 'v');
      const bc1 = 1 - hp.beta1 ** step, bc2 = 1 - hp.beta2 ** step;
      for (let i = 0; i < n; i++) {
        rp[i] = rp[i]! * (1 - hp.lr * hp.weightDecay);
        rm[i] = hp.beta1 * rm[i]! + (1 - hp.beta1) * grad[i]!;
        rv[i] = hp.beta2 * rv[i]! + (1 - hp.beta2) * grad[i]! ** 2;
        rp[i] = rp[i]! - (hp.lr / bc1) * rm[i]! / (Math.sqrt(rv[i]!) / Math.sqrt(bc2) + hp.eps);
      }
      const tol = dtype === 'f64' ? 1e-14 : 1e-6;
      assertRel(param, rp, tol, `${dtype} step ${step} param`);
      assertRel(m, rm, tol, `${dtype} step ${step} m`);
      assertRel(v, rv, tol, `${dtype} step ${step} v`);
    }
  }
  // Step 1 with zero gradient: no Adam move, only the decoupled decay.
  const one = op('adamw', 'f64', { param: Float64Array.from([2, -4]), grad: new Float64Array(2), m: new Float64Array(2), v: new Float64Array(2), ...hp, step: 1 });
  assertRel(arr(one, 'param'), [2 * (1 - 0.001), -4 * (1 - 0.001)], 1e-15, 'decay only');
  // Step 1 with a gradient g: bias correction makes the move lr * g / (|g| + eps') = lr * sign(g).
  const s1 = op('adamw', 'f64', { param: Float64Array.from([0, 0]), grad: Float64Array.from([3, -0.5]), m: new Float64Array(2), v: new Float64Array(2), ...hp, weightDecay: 0, eps: 1e-12, step: 1 });
  assertRel(arr(s1, 'param'), [-0.01, 0.01], 1e-9, 'bias-corrected first step');
});

test('sum_squares, scale_inplace, axpy', () => {
  const r = rng(15);
  const x = rand(20001, r);
  const ref = x.reduce((a, b) => a + b * b, 0);
  for (const dtype of ['f32', 'f64'] as const) {
    const cv = dtype === 'f32' ? f32 : (a: Float64Array) => a;
    const v = op('sum_squares', dtype, { x: cv(x) }).value as number;
    assert.ok(Math.abs(v - ref) <= 1e-12 * ref, `${dtype} sum_squares ${v} vs ${ref}`);
    assertRel(arr(op('scale_inplace', dtype, { x: cv(x), s: 0.5 }), 'x'), x.map((a) => a * 0.5), 0, `${dtype} scale`);
    const y = rand(x.length, r);
    assertRel(arr(op('axpy', dtype, { y: cv(y), x: cv(x), a: -2 }), 'y'), y.map((b, i) => b - 2 * x[i]!), dtype === 'f32' ? 1e-7 : 1e-16, `${dtype} axpy`);
  }
  assert.is(op('sum_squares', 'f64', { x: new Float64Array(0) }).value, 0);
});

test('optimizer_many: one run over many tensors gives the bits of sum_squares, scale_inplace, adamw and a zeroed grad per tensor', () => {
  // Tensor sizes around the pieces it splits work into: empty, tiny, one grain (16,384) and more,
  // and sum_squares's 8,192-element chunks.
  const sizes = [0, 1, 17, 8193, 40000, 5000, 16384, 3];
  const total = sizes.reduce((a, b) => a + b, 0);
  const r = rng(31);
  const param = f32(rand(total, r)), grad = f32(rand(total, r)), m = f32(rand(total, r).map((x) => x * 0.1));
  const v = f32(rand(total, r).map((x) => x * x * 0.01));
  const hp = { lr: 0.02, beta1: 0.85, beta2: 0.99, eps: 1e-7, weightDecay: 0.05, step: 3 };
  forEachIsa((isa) => forEachThreadCount([1, 2, 3], (threads) => {
    for (const gradScale of [1, 0.37]) {
      const what = `${isa}, ${threads} threads, grad scale ${gradScale}`;
      const got = op('optimizer_many', 'f32', { param, grad, m, v, sizes: Int32Array.from(sizes), ...hp, gradScale });
      let ss = 0, off = 0;
      const want = { param: new Float32Array(total), m: new Float32Array(total), v: new Float32Array(total) };
      for (const n of sizes) {
        const slice = (a: Float32Array) => a.slice(off, off + n);
        ss += op('sum_squares', 'f32', { x: slice(grad) }).value as number;
        const g = gradScale === 1 ? slice(grad) : arr(op('scale_inplace', 'f32', { x: slice(grad), s: gradScale }), 'x');
        const one = op('adamw', 'f32', { param: slice(param), grad: g, m: slice(m), v: slice(v), ...hp });
        for (const k of ['param', 'm', 'v'] as const) want[k].set(arr(one, k), off);
        off += n;
      }
      assert.is(got.sumSquares, ss, `${what}: sum of squares`);
      for (const k of ['param', 'm', 'v'] as const) assert.ok(Buffer.from(arr(got, k).buffer).equals(Buffer.from(want[k].buffer)), `${what}: ${k} bits`);
      assert.ok(arr(got, 'grad').every((x) => x === 0), `${what}: gradients zeroed`);
    }
  }));
  assert.throws(() => op('optimizer_many', 'f64', { param, grad, m, v, sizes: Int32Array.from(sizes), lr: 0.1 }), /f32 only/);
  assert.throws(() => op('optimizer_many', 'f32', { param, grad, m, v, sizes: Int32Array.of(total + 1), lr: 0.1 }), /grad/);
  assert.throws(() => op('optimizer_many', 'f32', { param, grad, m, v, sizes: Int32Array.of(-1, total + 1), lr: 0.1 }), /sizes\[0\]/);
});

// ---- determinism ----------------------------------------------------------------------------------

test('determinism: same bits with 1 and 2 threads (gemm, attention backward, embedding backward, sum_squares)', () => {
  const r = rng(16);
  const g = gemmCase(150, 200, 300, false, true, r, 1, 1, 0.5);
  const c = attnCase([3, 70, 45, 1], r, 4, 2, 16);
  const shape = attnShape(c);
  const dout = f32(rand(c.rows * c.heads * c.headDim, r));
  const ids = Int32Array.from({ length: 700 }, () => Math.floor(r() * 50));
  const edout = f32(rand(700 * 96, r));
  const big = f32(rand(300000, r));
  const runAll = () => {
    const f = op('attention_forward', 'f32', { ...shape, q: f32(c.q), k: f32(c.k), v: f32(c.v) });
    const b = op('attention_backward', 'f32', { ...shape, q: f32(c.q), k: f32(c.k), v: f32(c.v), out: arr(f, 'out'), lse: arr(f, 'lse'), dout });
    return {
      gemm: gemmRun(g, 'f32'),
      out: arr(f, 'out'), dq: arr(b, 'dq'), dk: arr(b, 'dk'), dv: arr(b, 'dv'),
      emb: arr(op('embedding_backward', 'f32', { ids, dout: edout, vocab: 50, dim: 96 }), 'dtable'),
      ss: Float64Array.of(op('sum_squares', 'f32', { x: big }).value as number),
    };
  };
  keepingThreads(() => {
    addon.setThreads(1);
    const one = runAll();
    addon.setThreads(2);
    const two = runAll();
    for (const k of Object.keys(one) as (keyof typeof one)[]) sameBits(one[k], two[k], k);
  });
});

// ---- argument checking ----------------------------------------------------------------------------

test('opRun: bad arguments throw errors naming the op and argument', () => {
  const throwsWith = (fn: () => unknown, re: RegExp) => assert.throws(fn, (e: Error) => re.test(e.message), `expected ${re}`);
  const A = new Float32Array(6), B = new Float32Array(6);
  throwsWith(() => op('gemm', 'f32', { M: 2, N: 2, K: 3, A: new Float64Array(6), B }), /gemm.*'A' must be a Float32Array/);
  throwsWith(() => op('gemm', 'f32', { M: 2, N: 2, K: 3, A: new Float32Array(5), B }), /gemm.*'A' has length 5/);
  throwsWith(() => op('gemm', 'f32', { M: 2, N: 2, K: 3, A, B: [1, 2, 3, 4, 5, 6] }), /gemm.*'B' must be/);
  throwsWith(() => op('gemm', 'f32', { M: 2, N: 2, K: 3, A, B, bDtype: 'f16' }), /gemm.*'bDtype'/);
  throwsWith(() => op('gemm', 'f32', { M: 2, N: 2, K: 3, A, B, bDtype: 'bf16' }), /gemm.*'B' must be a Uint16Array/);
  throwsWith(() => op('gemm', 'f32', { M: 2.5, N: 2, K: 3, A, B }), /gemm.*'M' must be an integer/);
  throwsWith(() => op('gemm', 'f32', { M: -1, N: 2, K: 3, A, B }), /gemm.*'M'/);
  throwsWith(() => op('gemm', 'f32', { M: 2, N: 2, K: 3, A, B, lda: 2 }), /gemm.*'lda' must be >= 3/);
  throwsWith(() => op('gemm', 'f32', { M: 2, N: 2, A, B }), /gemm.*'K' is required/);
  throwsWith(() => op('gemm', 'f32', { M: 2, N: 2, K: 3, A, B, C: new Float32Array(3) }), /gemm.*'C' has length 3/);
  throwsWith(() => op('nope', 'f32', {}), /unknown op 'nope'/);
  throwsWith(() => op('gemm', 'f16' as Dtype, {}), /dtype must be 'f32' or 'f64'/);
  throwsWith(() => addon.opRun('gemm', 'f32', null as unknown as Record<string, unknown>), /opRun\(name, dtype, args\)/);
  throwsWith(() => op('embedding_forward', 'f32', { ids: i32([0, 9]), table: new Float32Array(12), vocab: 4, dim: 3 }), /embedding_forward.*'ids\[1\]' is 9, expected in \[0, 4\)/);
  throwsWith(() => op('embedding_forward', 'f32', { ids: [0], table: new Float32Array(12), vocab: 4, dim: 3 }), /'ids' must be an Int32Array/);
  throwsWith(() => op('embedding_backward', 'f64', { ids: i32([0]), dout: new Float64Array(2), vocab: 4, dim: 3 }), /embedding_backward.*'dout' has length 2/);
  throwsWith(() => op('rmsnorm_forward', 'f32', { x: new Float32Array(8), w: new Float32Array(3), rows: 2, dim: 4, eps: 1e-6 }), /rmsnorm_forward.*'w'/);
  throwsWith(() => op('rmsnorm_backward', 'f32', { x: new Float32Array(8), w: new Float32Array(4), rstd: new Float32Array(1), dy: new Float32Array(8), rows: 2, dim: 4 }), /'rstd' has length 1/);
  throwsWith(() => op('rope_forward', 'f32', { x: new Float32Array(12), rows: 2, heads: 1, headDim: 5, positions: i32([0, 1]), invFreq: new Float32Array(2) }), /rope_forward.*'headDim' must be even/);
  throwsWith(() => op('rope_forward', 'f32', { x: new Float32Array(12), rows: 2, heads: 1, headDim: 6, positions: i32([0]), invFreq: new Float32Array(3) }), /'positions' has length 1/);
  const attn = { rows: 4, heads: 2, kvHeads: 1, headDim: 2, q: new Float32Array(16), k: new Float32Array(8), v: new Float32Array(8) };
  throwsWith(() => op('attention_forward', 'f32', { ...attn, seqStart: i32([0]), seqLen: i32([5]) }), /attention_forward.*'seqLen\[0\]' is 5/);
  throwsWith(() => op('attention_forward', 'f32', { ...attn, seqStart: i32([0, 1]), seqLen: i32([2, 2]) }), /overlap/);
  throwsWith(() => op('attention_forward', 'f32', { ...attn, kvHeads: 3, seqStart: i32([0]), seqLen: i32([4]) }), /'kvHeads' must divide heads/);
  throwsWith(() => op('attention_forward', 'f32', { ...attn, k: new Float32Array(7), seqStart: i32([0]), seqLen: i32([4]) }), /'k' has length 7/);
  throwsWith(() => op('attention_backward', 'f32', { ...attn, seqStart: i32([0]), seqLen: i32([4]) }), /attention_backward.*'out' is required/);
  throwsWith(() => op('gemm_group', 'f32', { calls: 3 }), /'calls' must be an array of gemm arguments/);
  throwsWith(() => op('gemm_group', 'f32', { calls: [] }), /'calls' must hold 1 to 4 GEMMs/);
  const tiny = { M: 2, N: 2, K: 2, A: f32([1, 2, 3, 4]), B: f32([1, 2, 3, 4]) };
  throwsWith(() => op('gemm_chains', 'f32', { calls: [tiny, tiny], chainLen: 3 }), /'chainLen' must divide the number of calls/);
  throwsWith(() => op('gemm_chains', 'f32', { calls: [], chainLen: 1 }), /'calls' must hold 1 to 1024 GEMMs/);
  throwsWith(() => op('gemm_chains', 'f32', { calls: [{ ...tiny, A: f32([1]) }], chainLen: 1 }), /calls\[0\]/);
  throwsWith(() => op('gemm_group', 'f32', { calls: [{ M: 2, N: 2, K: 2, A: new Float32Array(4) }] }), /gemm_group calls\[0\].*'B'/);
  throwsWith(() => op('swiglu_forward', 'f32', { gate: new Float32Array(3), up: new Float32Array(4) }), /swiglu_forward.*'up'/);
  throwsWith(() => op('cross_entropy', 'f32', { logits: new Float32Array(6), targets: i32([0, 3]), rows: 2, vocab: 3 }), /cross_entropy.*'targets\[1\]' is 3, expected < 3/);
  throwsWith(() => op('cross_entropy', 'f32', { logits: new Float32Array(6), targets: i32([0, 1]), rows: 2, vocab: 3, gradScale: new Float32Array(1) }), /'gradScale' has length 1/);
  throwsWith(() => op('adamw', 'f32', { param: new Float32Array(2), grad: new Float32Array(2), m: new Float32Array(2), v: new Float32Array(3), lr: 1, step: 1 }), /adamw.*'v' has length 3/);
  throwsWith(() => op('adamw', 'f32', { param: new Float32Array(2), grad: new Float32Array(2), m: new Float32Array(2), v: new Float32Array(2), lr: 1, step: 0 }), /adamw.*'step'/);
  throwsWith(() => op('axpy', 'f64', { y: new Float64Array(2), x: new Float64Array(2), a: NaN }), /axpy.*'a' must be finite/);
});

test.run();
