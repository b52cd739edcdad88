// Builds bench/peak.c (this machine's compute and memory ceilings) for the CPU it runs on.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

/** Compiles bench/peak.c under `root` to `exe`; the compiler's first error line on failure. */
export function buildPeak(root: string, exe: string): { ok: true } | { ok: false; error: string } {
  const cc = spawnSync('cc', ['-O2', '-march=native', '-pthread', join(root, 'bench', 'peak.c'), '-o', exe], { encoding: 'utf8' });
  if (cc.status === 0) return { ok: true };
  return { ok: false, error: (cc.stderr || String(cc.error)).trim().split('\n')[0] ?? 'cc failed' };
}
