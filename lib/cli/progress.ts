// Progress display for long commands: a cli-progress bar on a terminal, plain log lines otherwise
// (CI logs and pipes), so long work always shows it is alive.
import cliProgress from 'cli-progress';

export interface Progress {
  update(done: number, fields: Record<string, string | number>): void;
  stop(): void;
}

export function progress(label: string, total: number, fieldNames: string[]): Progress {
  if (process.stderr.isTTY) {
    // A field named "detail" is free text and shown without its name.
    const fmt = `${label} [{bar}] {value}/{total} ${fieldNames.map((f) => (f === 'detail' ? `{${f}}` : `${f} {${f}}`)).join('  ')}  eta {eta_formatted}`;
    const bar = new cliProgress.SingleBar({ format: fmt, stream: process.stderr, hideCursor: true }, cliProgress.Presets.shades_classic);
    bar.start(total, 0, Object.fromEntries(fieldNames.map((f) => [f, f === 'detail' ? '' : '-'])));
    return { update: (done, fields) => bar.update(done, fields), stop: () => bar.stop() };
  }
  let last = 0;
  return {
    update(done, fields) {
      const now = Date.now();
      if (done < total && now - last < 2000) return;  // at most one line every 2 s
      last = now;
      const shown = Object.entries(fields).filter(([, v]) => v !== '').map(([k, v]) => (k === 'detail' ? String(v) : `${k} ${v}`));
      process.stderr.write(`${`${label} ${done}/${total} ${shown.join('  ')}`.trimEnd()}\n`);
    },
    stop() {},
  };
}
