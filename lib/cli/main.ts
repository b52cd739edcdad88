#!/usr/bin/env node
// `seal` — the command-line entry. Dispatches to lib/cli/commands/*.
import { readFileSync } from 'node:fs';
import { UsageError, type CliCommand } from './command.js';
import { commands } from './commands/index.js';

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function help(list: CliCommand[]): string {
  const width = Math.max(...list.map((c) => c.name.length));
  return [
    `seal ${version()} — self-adapting language models (SEAL) on a native engine`,
    '',
    'usage: seal <command> [options]      seal <command> --help',
    '',
    'commands:',
    ...list.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
  ].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(help(commands));
    return name === undefined ? 1 : 0;
  }
  if (name === '--version' || name === '-v') {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  const command = commands.find((c) => c.name === name);
  if (!command) {
    process.stderr.write(`seal: unknown command '${name}'\n\n${help(commands)}`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    const sub = rest[0] !== undefined ? command.subUsage?.[rest[0]] : undefined;
    process.stdout.write(`${(sub ?? command.usage).trimEnd()}\n`);
    return 0;
  }
  return command.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    // node:util parseArgs rejects unknown options and missing values with ERR_PARSE_ARGS_* codes:
    // those are usage errors too.
    const parseError = err instanceof Error && String((err as { code?: unknown }).code ?? '').startsWith('ERR_PARSE_ARGS');
    if (err instanceof UsageError || parseError) {
      process.stderr.write(`seal: ${(err as Error).message}\n`);
      process.exitCode = 2;
    } else {
      const msg = err instanceof Error ? (process.env.SEALKIT_DEBUG ? err.stack ?? err.message : err.message) : String(err);
      process.stderr.write(`seal: error: ${msg}\n`);
      process.exitCode = 1;
    }
  },
);
