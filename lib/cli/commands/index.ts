// Every `seal` subcommand, in the order `seal --help` lists them.
import type { CliCommand } from '../command.js';
import { benchCommand } from './bench.js';
import { infoCommand } from './info.js';
import { scoreCommand } from './score.js';
import { tokenizeCommand } from './tokenize.js';

export const commands: CliCommand[] = [scoreCommand, tokenizeCommand, benchCommand, infoCommand];
