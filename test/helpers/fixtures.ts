// Shared test helpers: paths to committed fixtures and ../shared, tensor comparison with a report.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { readSafetensorsHeader, readTensor } from '../../lib/model/safetensors.js';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
export const fixturesDir = fileURLToPath(new URL('../fixtures/', import.meta.url));
/** ../shared beside the repository: real weights and data; tests skip without it. */
export const sharedDir = fileURLToPath(new URL('../../../shared/', import.meta.url));
export const hasShared = existsSync(sharedDir);

export async function readAllTensors(path: string): Promise<Map<string, Float32Array | Int32Array>> {
  const header = await readSafetensorsHeader(path);
  const out = new Map<string, Float32Array | Int32Array>();
  for (const name of header.tensors.keys()) {
    const t = await readTensor(header, name);
    if (t instanceof Float32Array || t instanceof Int32Array) out.set(name, t);
  }
  return out;
}

/** Largest |a-b| / (atol + rtol*|b|) over the arrays: <= 1 means within tolerance. */
export function closeness(actual: ArrayLike<number>, expected: ArrayLike<number>, atol: number, rtol: number): { ratio: number; index: number; maxAbs: number } {
  if (actual.length !== expected.length) throw new Error(`length mismatch: ${actual.length} vs ${expected.length}`);
  let ratio = 0;
  let index = -1;
  let maxAbs = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i] ?? NaN;
    const b = expected[i] ?? NaN;
    const d = Math.abs(a - b);
    const r = d / (atol + rtol * Math.abs(b));
    if (!(r <= ratio)) { ratio = Number.isNaN(r) ? Infinity : r; index = i; }
    if (d > maxAbs) maxAbs = d;
  }
  return { ratio, index, maxAbs };
}

export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, atol: number, rtol: number, what: string): void {
  const c = closeness(actual, expected, atol, rtol);
  if (c.ratio > 1) {
    throw new Error(`${what}: not within atol ${atol} / rtol ${rtol}: worst index ${c.index}: ${actual[c.index]} vs ${expected[c.index]} (max |diff| ${c.maxAbs.toExponential(3)})`);
  }
}
