// A persistent record of judge verdicts, so a re-run never asks the same question twice.
//
// The reference re-asks GPT-4.1 for every verdict on every run, and even re-grades the
// un-adapted baseline in every request (seal-method.md §1.6, §7 items 3–4): cost, rate limits,
// drift and non-deterministic verdicts. sealkit records each verdict once, keyed by a hash of
// (judge model, exact prompt), in an append-only JSONL file (one line per verdict, written
// before the verdict is returned — the same discipline as the run ledger in DESIGN.md). A run
// killed mid-write leaves at most a truncated last line, which is cut off when the file is next
// opened.

import { createHash } from 'node:crypto';
import { appendFile, mkdir, readFile, truncate } from 'node:fs/promises';
import { dirname } from 'node:path';
import { z } from 'zod';

export interface VerdictRecord {
  /** verdictKey(model, prompt). */
  key: string;
  model: string;
  verdict: boolean;
  /** The judge's raw reply, kept so verdicts can be audited or re-parsed later. */
  reply: string;
  /** The exact prompt (kept for auditing; the key alone identifies it). */
  prompt?: string;
}

const recordSchema = z.object({
  key: z.string().min(1),
  model: z.string(),
  verdict: z.boolean(),
  reply: z.string(),
  prompt: z.string().optional(),
});

/** sha256 over the JSON pair [model, prompt] — unambiguous whatever characters either holds. */
export function verdictKey(model: string, prompt: string): string {
  return createHash('sha256').update(JSON.stringify([model, prompt])).digest('hex');
}

export class VerdictCache {
  private readonly records = new Map<string, VerdictRecord>();
  /** Appends run one after another so lines never interleave; a failed append does not block later ones. */
  private tail: Promise<void> = Promise.resolve();
  /** The file does not end with a newline: start the next append on a fresh line. */
  private needsNewline = false;

  /** The JSONL file, or null for a memory-only cache. */
  readonly path: string | null;

  private constructor(path: string | null) {
    this.path = path;
  }

  /** Opens (or starts) the JSONL cache at `path`; `null` keeps verdicts in memory only. */
  static async open(path: string | null): Promise<VerdictCache> {
    const cache = new VerdictCache(path);
    if (path === null) return cache;
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return cache;
      throw new Error(`verdict cache ${path}: cannot read: ${(err as Error).message}`);
    }
    const lines = text.split('\n');
    const complete = text.endsWith('\n') || text === '';
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!;
      if (line.trim() === '') continue;
      const isLast = i === lines.length - 1;
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        if (isLast && !complete) {
          // A write cut short by a kill: cut it off the file (so later appends do not turn it
          // into a corrupt line in the middle); its verdict is simply asked again.
          const keep = text.length - line.length;
          try {
            await truncate(path, Buffer.byteLength(text.slice(0, keep), 'utf8'));
          } catch (err) {
            throw new Error(`verdict cache ${path}: cannot drop the truncated last line: ${(err as Error).message}`);
          }
          return cache;
        }
        throw new Error(`verdict cache ${path}:${i + 1}: not valid JSON`);
      }
      const result = recordSchema.safeParse(parsed);
      if (!result.success) {
        const issue = result.error.issues[0];
        const field = issue?.path.join('.') ?? '';
        throw new Error(
          `verdict cache ${path}:${i + 1}: not a verdict record {key, model, verdict, reply}: ${field === '' ? '' : `${field}: `}${issue?.message ?? 'invalid'}`,
        );
      }
      cache.records.set(result.data.key, result.data);
    }
    // Last line complete JSON but no final newline (hand-edited): start appends on a new line.
    if (!complete) cache.needsNewline = true;
    return cache;
  }

  get size(): number {
    return this.records.size;
  }

  get(key: string): VerdictRecord | undefined {
    return this.records.get(key);
  }

  /** Records a verdict; resolves once it is on disk (immediately for an in-memory cache). */
  put(record: VerdictRecord): Promise<void> {
    this.records.set(record.key, record);
    const path = this.path;
    if (path === null) return Promise.resolve();
    const write = this.tail.then(async () => {
      const prefix = this.needsNewline ? '\n' : '';
      await mkdir(dirname(path), { recursive: true });
      await appendFile(path, `${prefix}${JSON.stringify(record)}\n`, 'utf8');
      this.needsNewline = false;
    });
    this.tail = write.catch(() => undefined);
    return write;
  }
}
