// Running CPU kernels under each instruction set this CPU supports (the addon's setIsa), always
// restoring the one that was in use.
import { native } from '../../lib/native.js';

const addon = native();

/** The ISAs this CPU supports, from plain scalar code up to what it detected. */
export function supportedIsas(): string[] {
  const order = ['scalar', 'avx2', 'avx512', 'avx512bf16'];
  return order.slice(0, order.indexOf(addon.info().isaDetected) + 1);
}

/** Runs fn (which may switch ISAs with addon.setIsa), then restores the ISA that was in use. */
export function keepingIsa(fn: () => void): void {
  const saved = addon.info().isa;
  try {
    fn();
  } finally {
    addon.setIsa(saved);
  }
}

/** Runs fn under each of `isas` (default: every supported one), then restores the ISA in use. */
export function forEachIsa(fn: (isa: string) => void, isas: readonly string[] = supportedIsas()): void {
  keepingIsa(() => {
    for (const isa of isas) {
      addon.setIsa(isa);
      fn(isa);
    }
  });
}
