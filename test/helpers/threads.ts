// Running CPU kernels on other thread counts (the addon's setThreads), always restoring the count
// that was in use.
import { native } from '../../lib/native.js';

const addon = native();

/** Runs fn (which may change the thread count with addon.setThreads), then restores the count in use. */
export function keepingThreads(fn: () => void): void {
  const saved = addon.info().threads;
  try {
    fn();
  } finally {
    addon.setThreads(saved);
  }
}

/** Runs fn on each of `counts` threads, then restores the count in use. */
export function forEachThreadCount(counts: readonly number[], fn: (threads: number) => void): void {
  keepingThreads(() => {
    for (const t of counts) {
      addon.setThreads(t);
      fn(t);
    }
  });
}
