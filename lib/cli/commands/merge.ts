// `seal merge` — fold a PEFT adapter into a model and write the merged model as an HF directory.
import { parseArgs } from 'node:util';
import { Model } from '../../model/model.js';
import { loadPeftAdapter } from '../../model/peft.js';
import { UsageError, type CliCommand } from '../command.js';

const USAGE = `usage: seal merge --model DIR --adapter ADAPTER_DIR --out DIR

  Writes config.json, model.safetensors (f32) and the tokenizer files of DIR, with W + s·B·A in
  place of every adapted projection; the result loads anywhere a Hugging Face model does.`;

export const mergeCommand: CliCommand = {
  name: 'merge',
  summary: 'merge a PEFT LoRA adapter into the base weights and export the model',
  usage: USAGE,
  async run(argv) {
    const { values } = parseArgs({ args: argv, options: { model: { type: 'string' }, adapter: { type: 'string' }, out: { type: 'string' } } });
    for (const req of ['model', 'adapter', 'out'] as const) if (!values[req]) throw new UsageError(`merge: --${req} is required\n${USAGE}`);
    const model = await Model.load(values.model!);
    try {
      await loadPeftAdapter(model, values.adapter!, 0);
      await model.mergeAdapter(0);
      await model.save(values.out!);
      process.stdout.write(`merged ${values.adapter} into ${values.model} -> ${values.out}\n`);
      return 0;
    } finally {
      await model.dispose();
    }
  },
};
