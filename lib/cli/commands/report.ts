// `seal report RUN_DIR` — the results table of a run, recomputed from its ledger.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Ledger } from '../../seal/ledger.js';
import { formatTable, summarize } from '../../seal/summary.js';
import { UsageError, type CliCommand } from '../command.js';

export const reportCommand: CliCommand = {
  name: 'report',
  summary: 'print the results table of a run directory (from its ledger)',
  usage: 'usage: seal report RUN_DIR [--json]',
  async run(argv) {
    const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { json: { type: 'boolean' } } });
    const dir = positionals[0];
    if (!dir) throw new UsageError('report: RUN_DIR is required');
    const path = join(dir, 'ledger.jsonl');
    if (!existsSync(path)) throw new UsageError(`report: ${path} does not exist (not a run directory?)`);
    const ledger = Ledger.open(path);
    const entries = ledger.all();
    ledger.close();
    let order: string[] = [];
    const summaryPath = join(dir, 'summary.json');
    if (existsSync(summaryPath)) order = (JSON.parse(readFileSync(summaryPath, 'utf8')) as { conditions: { name: string }[] }).conditions.map((c) => c.name);
    else order = [...new Set(entries.filter((e) => e.type === 'inner' && e.phase === 'eval').map((e) => (e as { condition: string }).condition))];
    const summary = summarize(entries, order);
    process.stdout.write(values.json ? `${JSON.stringify(summary)}\n` : `${formatTable(summary)}\n${existsSync(summaryPath) ? '' : '(run not finished: partial results)\n'}`);
    return 0;
  },
};
