// Every `seal` subcommand, in the order `seal --help` lists them.
import type { CliCommand } from '../command.js';
import { infoCommand } from './info.js';
import { tokenizeCommand } from './tokenize.js';

export const commands: CliCommand[] = [infoCommand, tokenizeCommand];
