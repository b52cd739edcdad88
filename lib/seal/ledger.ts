// The run's append-only log: one JSON line per finished piece of work (sampled self-edits, an
// inner-loop evaluation, a policy update), written and fsynced before the loop moves on. A killed
// run reopens its ledger, skips every key already present and so loses and repeats nothing. A line
// cut off by the kill (no trailing newline) is dropped on reopening.
import { closeSync, existsSync, fsyncSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';

export type Phase = 'train' | 'eval';

export interface SelfEditsEntry {
  type: 'self-edits';
  phase: Phase;
  condition: string;
  round: number;
  context: string;
  texts: string[];
  seconds: number;
}

export interface InnerEntry {
  type: 'inner';
  phase: Phase;
  condition: string;
  round: number;
  context: string;
  sample: number;
  repeat: number;
  seed: number;
  selfEdit: string | null;
  valid: boolean;
  reason?: string;
  config?: Record<string, unknown>;
  score: number;
  correct: number;
  total: number;
  items?: { question: string; gold: string; prediction: string; correct: boolean }[];
  sequences: number;
  trainTokens: number;
  steps: number;
  finalLoss: number | null;
  seconds: { train: number; eval: number };
}

export interface PolicyEntry {
  type: 'policy';
  round: number;
  kept: { context: string; sample: number; reward: number }[];
  steps: number;
  firstLoss: number | null;
  finalLoss: number | null;
  checkpoint: string;
  seconds: number;
}

export type LedgerEntry = SelfEditsEntry | InnerEntry | PolicyEntry;

export function entryKey(e: LedgerEntry): string {
  switch (e.type) {
    case 'self-edits': return `self-edits|${e.phase}|${e.condition}|${e.round}|${e.context}`;
    case 'inner': return `inner|${e.phase}|${e.condition}|${e.round}|${e.context}|${e.sample}|${e.repeat}`;
    case 'policy': return `policy|${e.round}`;
  }
}

export class Ledger {
  readonly path: string;
  private readonly fd: number;
  private readonly entries = new Map<string, LedgerEntry>();
  private readonly order: LedgerEntry[] = [];
  private size: number;

  private constructor(path: string, fd: number, size: number) {
    this.path = path;
    this.fd = fd;
    this.size = size;
  }

  /** Opens (creating if needed) and replays the ledger at `path`. */
  static open(path: string): Ledger {
    let validBytes = 0;
    const lines: LedgerEntry[] = [];
    if (existsSync(path)) {
      const text = readFileSync(path, 'utf8');
      let pos = 0;
      let lineNo = 0;
      while (pos < text.length) {
        const nl = text.indexOf('\n', pos);
        if (nl < 0) break;  // a partial last line from a kill: dropped below
        lineNo++;
        const line = text.slice(pos, nl);
        pos = nl + 1;
        if (line.trim() === '') { validBytes = Buffer.byteLength(text.slice(0, pos)); continue; }
        try {
          lines.push(JSON.parse(line) as LedgerEntry);
        } catch (err) {
          throw new Error(`${path}:${lineNo}: corrupt ledger line (${(err as Error).message}); it is not the last line, so the ledger was damaged, not just cut off`);
        }
        validBytes = Buffer.byteLength(text.slice(0, pos));
      }
    }
    const fd = openSync(path, existsSync(path) ? 'r+' : 'w+');
    ftruncateSync(fd, validBytes);
    const ledger = new Ledger(path, fd, validBytes);
    for (const e of lines) ledger.remember(e);
    return ledger;
  }

  private remember(e: LedgerEntry): void {
    const key = entryKey(e);
    if (!this.entries.has(key)) this.order.push(e);
    this.entries.set(key, e);
  }

  has(key: string): boolean { return this.entries.has(key); }
  get<T extends LedgerEntry>(key: string): T | undefined { return this.entries.get(key) as T | undefined; }
  all(): readonly LedgerEntry[] { return this.order; }

  /** Appends, then fsyncs: when this returns the entry survives a crash. */
  append(e: LedgerEntry): void {
    const key = entryKey(e);
    if (this.entries.has(key)) throw new Error(`ledger: ${key} is already recorded`);
    const line = `${JSON.stringify(e)}\n`;
    const buf = Buffer.from(line, 'utf8');
    let off = 0;
    while (off < buf.length) off += writeSync(this.fd, buf, off, buf.length - off, this.size + off);
    this.size += buf.length;
    fsyncSync(this.fd);
    this.remember(e);
  }

  close(): void { closeSync(this.fd); }
}
