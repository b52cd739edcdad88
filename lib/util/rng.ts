// The project's counter-based random numbers, identical to native/core/rng.h: value = f(seed,
// counter), so TypeScript and C++ draw the same streams (seeds are 53-bit safe integers here).
function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** rng_u32(seed, counter) of rng.h. */
export function rngU32(seed: number, counter: number): number {
  const sLo = seed >>> 0, sHi = Math.floor(seed / 2 ** 32) >>> 0;
  const cLo = counter >>> 0, cHi = Math.floor(counter / 2 ** 32) >>> 0;
  let h = mix32((cHi + 0x9e3779b9) >>> 0);
  h = mix32((cLo ^ h) >>> 0);
  h = mix32((sHi ^ h ^ 0x85ebca6b) >>> 0);
  return mix32((sLo ^ h) >>> 0);
}

/** A stream over counters 0, 1, 2, … of one seed. */
export class Rng {
  private counter = 0;
  readonly seed: number;
  constructor(seed: number) {
    this.seed = seed;
  }
  u32(): number { return rngU32(this.seed, this.counter++); }
  /** Uniform in [0, 1) with 24 bits, as rng_uniform. */
  uniform(): number { return (this.u32() >>> 8) / 16777216; }
  /** Integer in [0, n). */
  below(n: number): number { return Math.floor(this.uniform() * n); }
  /** Fisher-Yates shuffle in place. */
  shuffle<T>(xs: T[]): T[] {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = this.below(i + 1);
      [xs[i], xs[j]] = [xs[j]!, xs[i]!];
    }
    return xs;
  }
}
