// Every `seal` subcommand, in the order `seal --help` lists them.
import type { CliCommand } from '../command.js';
import { arcCommand } from './arc.js';
import { benchCommand } from './bench.js';
import { demoCommand } from './demo.js';
import { generateCommand } from './generate.js';
import { infoCommand } from './info.js';
import { knowledgeCommand } from './knowledge.js';
import { mergeCommand } from './merge.js';
import { pretrainCommand } from './pretrain.js';
import { reportCommand } from './report.js';
import { scoreCommand } from './score.js';
import { sftCommand } from './sft.js';
import { tokenizeCommand } from './tokenize.js';

export const commands: CliCommand[] = [demoCommand, knowledgeCommand, arcCommand, reportCommand, generateCommand, sftCommand, pretrainCommand, scoreCommand, mergeCommand, tokenizeCommand, benchCommand, infoCommand];
