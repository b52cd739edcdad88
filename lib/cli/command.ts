// The shape every `seal` subcommand has. main.ts lists them; each lives in lib/cli/commands/.
export interface CliCommand {
  /** The word after `seal` (e.g. "score"). */
  name: string;
  /** One line for `seal --help`. */
  summary: string;
  /** Full usage text for `seal NAME --help`. */
  usage: string;
  /** Usage texts of sub-commands (`seal NAME SUB --help`), e.g. `seal demo arc`. */
  subUsage?: Record<string, string>;
  /** Runs the command with the arguments after its name; resolves to the process exit code. */
  run(argv: string[]): Promise<number>;
}

/** An error whose message is shown to the user as is (no stack trace): bad flags, bad files. */
export class UsageError extends Error {
  override name = 'UsageError';
}
