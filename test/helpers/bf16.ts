// bf16 bit patterns for tests: the conversions of native/core/dtype.h, in TypeScript.
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** bf16 bits of an f32 value: round to nearest even (as PyTorch); NaN stays a quiet NaN. */
export function toBf16(x: number): number {
  f32[0] = x;
  const v = u32[0]!;
  if ((v & 0x7fffffff) > 0x7f800000) return ((v >>> 16) | 0x40) & 0xffff;
  return ((v + 0x7fff + ((v >>> 16) & 1)) >>> 16) & 0xffff;
}

/** The f32 value of bf16 bits (exact). */
export function fromBf16(h: number): number {
  u32[0] = (h << 16) >>> 0;
  return f32[0]!;
}

/** toBf16 of every element. */
export function bf16Bits(x: ArrayLike<number>): Uint16Array {
  return Uint16Array.from(x as ArrayLike<number>, toBf16);
}
