// Every `seal` subcommand, in the order `seal --help` lists them.
import type { CliCommand } from '../command.js';
import { infoCommand } from './info.js';

export const commands: CliCommand[] = [infoCommand];
