// Attention with bf16 products (native/cpu/attention_bf16.cc), what models with bf16 weights run:
// checked against an f64 reference that rounds to bf16 exactly where the kernel's contract says
// (attention_bf16.h), against the unrounded result (the roundings must be there and be the only
// difference), across thread counts, and for falling back to the f32 kernels where it cannot run.
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { native } from '../lib/native.js';
import { withEnv } from '../lib/bench/env.js';
import { Model, packSequences } from '../lib/model/model.js';
import { fromBf16, toBf16 } from './helpers/bf16.js';
import { assertClose, repoRoot } from './helpers/fixtures.js';
import { keepingIsa } from './helpers/isa.js';
import { randF32, rng } from './helpers/random.js';
import { keepingThreads } from './helpers/threads.js';

const addon = native();
// AVX512-BF16 on a CPU whose vdpbf16ps keeps up with its FMA (AMD Zen 4/5); elsewhere only the
// fallback test below runs.
const hasBf16 = addon.info().attentionBf16;
type Out = Record<string, Float32Array>;
const run = (name: string, args: Record<string, unknown>) => addon.opRun(name, 'f32', args) as unknown as Out;
const bf = (x: number) => fromBf16(toBf16(x));
const bf16Test = hasBf16 ? test : test.skip;
if (!hasBf16) console.log('attention-bf16: the kernel tests skipped: bf16 attention does not run on this CPU');

interface Case {
  rows: number; heads: number; kvHeads: number; headDim: number; qStride: number; kvStride: number;
  seqStart: Int32Array; seqLen: Int32Array; q: Float32Array; k: Float32Array; v: Float32Array; dout: Float32Array;
}

// Sequences packed with one uncovered row after each, strides wider than the heads (padding columns).
function makeCase(lens: number[], heads: number, kvHeads: number, headDim: number, seed: number): Case {
  const r = rng(seed);
  const seqStart: number[] = [];
  let rows = 0;
  for (const l of lens) { seqStart.push(rows); rows += l + 1; }
  const qStride = heads * headDim + 5, kvStride = kvHeads * headDim + 3;
  return {
    rows, heads, kvHeads, headDim, qStride, kvStride,
    seqStart: Int32Array.from(seqStart), seqLen: Int32Array.from(lens),
    q: randF32(rows * qStride, r), k: randF32(rows * kvStride, r), v: randF32(rows * kvStride, r),
    dout: randF32(rows * heads * headDim, r),
  };
}
const shapeOf = (c: Case) => ({
  rows: c.rows, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, qStride: c.qStride, kvStride: c.kvStride,
  seqStart: c.seqStart, seqLen: c.seqLen,
});

// Forward then backward (on the forward's own out and lse); dq/dk/dv start at 7 so that rows and
// columns the kernels must not touch can be checked.
interface Grads { out: Float32Array; lse: Float32Array; dq: Float32Array; dk: Float32Array; dv: Float32Array }
const KEYS = ['out', 'lse', 'dq', 'dk', 'dv'] as const;
function attention(c: Case, bf16Products: boolean): Grads {
  const shape = { ...shapeOf(c), bf16Products };
  const f = run('attention_forward', { ...shape, q: c.q, k: c.k, v: c.v });
  const fill = (n: number) => new Float32Array(n).fill(7);
  const b = run('attention_backward', {
    ...shape, q: c.q, k: c.k, v: c.v, out: f.out, lse: f.lse, dout: c.dout,
    dq: fill(c.q.length), dk: fill(c.k.length), dv: fill(c.v.length),
  });
  return { out: f.out!, lse: f.lse!, dq: b.dq!, dk: b.dk!, dv: b.dv! };
}

// The contract's roundings in f64: forward from scratch; backward from the kernel's out and lse.
function reference(c: Case, out: Float32Array, lse: Float32Array) {
  const D = c.headDim, group = c.heads / c.kvHeads, scale = 1 / Math.sqrt(D), os = c.heads * D;
  const ref = {
    out: new Float64Array(out.length), lse: new Float64Array(lse.length),
    dq: new Float64Array(c.q.length), dk: new Float64Array(c.k.length), dv: new Float64Array(c.v.length),
  };
  const qb = c.q.map(bf), kb = c.k.map(bf), vb = c.v.map(bf), db = c.dout.map(bf);
  for (let s = 0; s < c.seqLen.length; s++) {
    const st = c.seqStart[s]!, L = c.seqLen[s]!;
    for (let h = 0; h < c.heads; h++) {
      const kh = Math.floor(h / group), qo = h * D, ko = kh * D;
      const dot = (a: Float32Array, ai: number, b: Float32Array, bi: number) => {
        let x = 0;
        for (let d = 0; d < D; d++) x += a[ai + d]! * b[bi + d]!;
        return x;
      };
      for (let t = 0; t < L; t++) {
        const qi = (st + t) * c.qStride + qo, oi = (st + t) * os + qo;
        const S = Array.from({ length: t + 1 }, (_, j) => scale * dot(qb, qi, kb, (st + j) * c.kvStride + ko));
        const m = Math.max(...S);
        const e = S.map((x) => Math.exp(x - m));
        const sum = e.reduce((a, b) => a + b, 0);
        ref.lse[(st + t) * c.heads + h] = m + Math.log(sum);
        for (let j = 0; j <= t; j++)
          for (let d = 0; d < D; d++) {
            ref.out[oi + d] = ref.out[oi + d]! + (bf(e[j]!) * vb[(st + j) * c.kvStride + ko + d]!) / sum;
          }
        // Backward on the kernel's forward results.
        const delta = dot(c.dout, oi, out, oi);
        for (let j = 0; j <= t; j++) {
          const kj = (st + j) * c.kvStride + ko;
          const p = Math.exp(S[j]! - lse[(st + t) * c.heads + h]!);
          const dS = bf(scale * p * (dot(db, oi, vb, kj) - delta)), pb = bf(p);
          for (let d = 0; d < D; d++) {
            ref.dq[qi + d] = ref.dq[qi + d]! + dS * kb[kj + d]!;
            ref.dk[kj + d] = ref.dk[kj + d]! + dS * qb[qi + d]!;
            ref.dv[kj + d] = ref.dv[kj + d]! + pb * db[oi + d]!;
          }
        }
      }
    }
  }
  return ref;
}

// max |a - b| over the covered elements / max |b| there; untouched (7) elsewhere.
function relErr(a: Float32Array, b: Float64Array, covered: (i: number) => boolean, what: string): number {
  let d = 0, m = 0;
  for (let i = 0; i < a.length; i++) {
    if (!covered(i)) {
      assert.is(a[i], 7, `${what}[${i}] must stay untouched`);
      continue;
    }
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    m = Math.max(m, Math.abs(b[i]!));
  }
  return d / m;
}

function coveredBy(c: Case, stride: number, used: number): (i: number) => boolean {
  const rowCovered = new Uint8Array(c.rows);
  c.seqStart.forEach((st, s) => rowCovered.fill(1, st, st + c.seqLen[s]!));
  return (i) => rowCovered[Math.floor(i / stride)] === 1 && i % stride < used;
}

// Head sizes 16 (one vector), 32, 48 (three single vectors) and 64 (one group of four); lengths
// across the forward's 32-query and the backward's 64-query blocks, odd ones (a key pair short of
// its partner), a single token.
bf16Test('bf16 products: forward and backward equal an f64 reference rounding where the contract says', () => {
  for (const [hd, seed] of [[16, 1], [32, 2], [48, 3], [64, 4]] as const) {
    const c = makeCase([1, 2, 33, 130], 6, 3, hd, seed);
    const got = attention(c, true);
    const ref = reference(c, got.out, got.lse);
    const unrounded = attention(c, false);
    const qc = coveredBy(c, c.qStride, c.heads * hd), kc = coveredBy(c, c.kvStride, c.kvHeads * hd);
    const oc = () => true;
    const errs: Record<string, [number, number]> = {
      out: [relErr(got.out, ref.out, oc, 'out'), relErr(unrounded.out, ref.out, oc, 'out')],
      lse: [relErr(got.lse, ref.lse, oc, 'lse'), relErr(unrounded.lse, ref.lse, oc, 'lse')],
      dq: [relErr(got.dq, ref.dq, qc, 'dq'), relErr(unrounded.dq, ref.dq, qc, 'dq')],
      dk: [relErr(got.dk, ref.dk, kc, 'dk'), relErr(unrounded.dk, ref.dk, kc, 'dk')],
      dv: [relErr(got.dv, ref.dv, kc, 'dv'), relErr(unrounded.dv, ref.dv, kc, 'dv')],
    };
    for (const [k, [err, f32Err]] of Object.entries(errs)) {
      assert.ok(err < 3e-4, `${k}, head ${hd}: ${err.toExponential(2)} from the rounding reference`);
      // The f32 kernels (no roundings) sit about a bf16 step away: the roundings are there.
      assert.ok(f32Err > 5 * err, `${k}, head ${hd}: f32 ${f32Err.toExponential(2)} vs bf16 ${err.toExponential(2)}`);
    }
  }
});

bf16Test('bf16 products: the same bits with 1, 2 and 3 threads', () => {
  const c = makeCase([3, 70, 45, 1, 200], 9, 3, 64, 5);
  keepingThreads(() => {
    const results = [1, 2, 3].map((n) => {
      addon.setThreads(n);
      return attention(c, true);
    });
    for (const k of KEYS)
      for (const other of results.slice(1))
        assert.equal(new Uint32Array(other[k].buffer), new Uint32Array(results[0]![k].buffer), `${k} bits`);
  });
});

test('bf16 products fall back to the f32 kernels (same bits): no AVX512-BF16, head_dim 20, switched off', () => {
  const same = (a: Grads, b: Grads, what: string) => {
    for (const k of KEYS) assert.equal(new Uint32Array(a[k].buffer), new Uint32Array(b[k].buffer), `${what}: ${k}`);
  };
  const c = makeCase([5, 40], 4, 2, 32, 6);
  withEnv({ SEALKIT_ATTENTION_BF16: '0' }, () => {
    assert.is(addon.info().attentionBf16, false, 'info() says so');
    same(attention(c, true), attention(c, false), 'switched off');
  });
  const odd = makeCase([5, 40], 4, 2, 20, 7);
  same(attention(odd, true), attention(odd, false), 'head_dim 20');
  keepingIsa(() => {
    addon.setIsa('avx512');
    if (addon.info().isa === 'avx512') same(attention(c, true), attention(c, false), 'avx512');
  });
});

// The model asks for bf16 products exactly when its weights are bf16: a bf16 model's logits and
// LoRA gradients move when SEALKIT_ATTENTION_BF16=0 takes them away (staying within bf16 tolerance
// of the f32 model), an f32 model's keep their bits.
test('bf16 products in a model: for bf16 weights only; logits and LoRA gradients in bf16 tolerance', async () => {
  const dir = join(repoRoot, 'test/fixtures/models/llama-gqa');  // head_dim 16
  const tokens = Array.from({ length: 70 }, (_, i) => (i * 37 + 11) % 200);
  const seqs = [{ tokens, slot: 0 }, { tokens: tokens.slice(0, 33), slot: 0 }];
  const run = async (storage: 'f32' | 'bf16', env: Record<string, string>) => withEnv(env, async () => {
    const m = await Model.load(dir, { storage });
    m.createAdapter(0, { rank: 4, alpha: 8 });
    const logits = (await m.logits(seqs)).map((l) => Float32Array.from(l));
    await m.backwardPacked(packSequences(seqs, m.config.vocabSize, true).batch);
    const grad = m.getAdapterTensor(0, 0, 'v_proj', 'B', true);  // through every layer's attention
    await m.dispose();
    return { logits, grad };
  });
  const bf = await run('bf16', {});
  const bfOff = await run('bf16', { SEALKIT_ATTENTION_BF16: '0' });
  const f32 = await run('f32', {});
  const f32Off = await run('f32', { SEALKIT_ATTENTION_BF16: '0' });
  assert.ok(f32.grad.some((x) => x !== 0), 'the gradient checked is not all zero');
  const bits = (x: Float32Array) => Array.from(new Uint32Array(x.buffer, x.byteOffset, x.length));
  f32.logits.forEach((l, i) => assert.equal(bits(l), bits(f32Off.logits[i]!), 'f32 weights: the switch is a no-op'));
  assert.equal(bits(f32.grad), bits(f32Off.grad), 'f32 weights: gradients unchanged');
  if (hasBf16) {
    assert.not.equal(bits(bf.logits[0]!), bits(bfOff.logits[0]!), 'bf16 weights: attention multiplies in bf16');
    assert.not.equal(bits(bf.grad), bits(bfOff.grad), 'bf16 weights: so does its backward pass');
  }
  bf.logits.forEach((l, i) => assertClose(l, f32.logits[i]!, 5e-2, 5e-2, `bf16 vs f32 logits, sequence ${i}`));
  assertClose(bf.grad, f32.grad, 5e-2, 5e-2, 'bf16 vs f32 LoRA gradient');
});

test.run();
