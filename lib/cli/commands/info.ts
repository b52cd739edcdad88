// `seal info` — what the engine will run on: ISA, threads, backends.
import { parseArgs } from 'node:util';
import { native } from '../../native.js';
import type { CliCommand } from '../command.js';

export const infoCommand: CliCommand = {
  name: 'info',
  summary: 'show the engine: CPU instruction set chosen, threads, backends',
  usage: 'usage: seal info [--threads N] [--json]',
  async run(argv) {
    const { values } = parseArgs({ args: argv, options: { json: { type: 'boolean' }, threads: { type: 'string' } } });
    const addon = native();
    if (values.threads !== undefined) addon.setThreads(Number(values.threads));
    // laneHelpRuns counts this process's training passes: always 0 here.
    const { laneHelpRuns: _, ...info } = addon.info();
    const out = { version: process.env.npm_package_version ?? undefined, ...info, node: process.version, platform: `${process.platform}-${process.arch}` };
    if (values.json) {
      process.stdout.write(`${JSON.stringify(out)}\n`);
    } else {
      process.stdout.write(
        [
          `backend   cpu${info.cuda ? ' + cuda' : ''}`,
          ...(info.cuda ? [`gpus      ${info.gpus?.length ? info.gpus.map((g) => `${g.index}: ${g.name} (${(g.memoryBytes / 2 ** 30).toFixed(0)} GiB, sm ${g.computeCapability})`).join('; ') : `none (${info.gpuError ?? 'unknown'})`}`] : []),
          `isa       ${info.isa} (cpu supports ${info.isaDetected})`,
          `threads   ${info.threads}`,
          `node      ${out.node} ${out.platform}`,
          '',
        ].join('\n'),
      );
    }
    return 0;
  },
};
