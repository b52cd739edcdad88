// GEMM operands for the kernel benchmarks (bench/gemm.ts, bench/ab.ts): reproducible values in
// [-1, 1) from a seed, and their bf16 bits (round to nearest even) for bf16 weights.
export function randomF32(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = s / 2 ** 31 - 1;
  }
  return a;
}

export function toBf16(a: Float32Array): Uint16Array {
  const u = new Uint32Array(a.buffer, a.byteOffset, a.length);
  return Uint16Array.from(u, (v) => ((v + 0x7fff + ((v >>> 16) & 1)) >>> 16) & 0xffff);
}
