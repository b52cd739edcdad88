// Supervised fine-tuning of a LoRA adapter: JSONL rows ({prompt, completion} or {messages}) become
// token sequences with a training mask (completion / assistant tokens by default), trained with
// AdamW, shuffled per epoch with the project's seeded RNG, in packed batches.
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { Rng } from '../util/rng.js';
import type { Model, Sequence } from './model.js';
import { learningRate, type ScheduleKind } from './schedule.js';
import type { ChatMessage, TextTokenizer } from './tokenizer.js';

export interface SftExample {
  tokens: number[];
  /** 1 where the token is a training target (labels convention, see Sequence.trainMask). */
  trainMask: number[];
}

/** Reads a JSONL file; errors name the file and line. Blank lines are skipped. */
export async function readJsonl(path: string): Promise<{ line: number; value: unknown }[]> {
  const rows: { line: number; value: unknown }[] = [];
  const rl = createInterface({ input: createReadStream(path, { encoding: 'utf8' }), crlfDelay: Infinity });
  let line = 0;
  for await (const text of rl) {
    line++;
    if (text.trim() === '') continue;
    try {
      rows.push({ line, value: JSON.parse(text) });
    } catch (err) {
      throw new Error(`${path}:${line}: invalid JSON (${(err as Error).message})`);
    }
  }
  if (rows.length === 0) throw new Error(`${path}: no rows`);
  return rows;
}

function isMessages(v: unknown): v is ChatMessage[] {
  return Array.isArray(v) && v.length > 0 && v.every((m) => typeof m === 'object' && m !== null && typeof (m as ChatMessage).role === 'string' && typeof (m as ChatMessage).content === 'string');
}

/**
 * Tokenizes one row. {prompt, completion}: prompt encoded with special tokens, completion without,
 * then EOS; only completion tokens (and EOS) are trained unless allTokens. {messages}: rendered with
 * the chat template; tokens of assistant turns are trained (found by rendering each prefix).
 */
export function tokenizeSftRow(value: unknown, tok: TextTokenizer, where: string, allTokens = false): SftExample {
  if (typeof value !== 'object' || value === null) throw new Error(`${where}: expected an object with prompt/completion or messages`);
  const row = value as Record<string, unknown>;
  if (typeof row.prompt === 'string' && typeof row.completion === 'string') {
    const p = tok.encode(row.prompt);
    const c = [...tok.encode(row.completion, { addSpecialTokens: false })];
    const eos = tok.eosTokenIds[0];
    if (eos !== undefined) c.push(eos);
    const tokens = [...p, ...c];
    return { tokens, trainMask: tokens.map((_, i) => (allTokens || i >= p.length ? 1 : 0)) };
  }
  if (row.messages !== undefined) {
    if (!isMessages(row.messages)) throw new Error(`${where}: messages must be a non-empty array of {role, content} strings`);
    if (!tok.hasChatTemplate) throw new Error(`${where}: messages need a chat template, and the tokenizer in ${tok.dir} has none`);
    const msgs = row.messages;
    const tokens = tok.encodeChat(msgs);
    const mask = tokens.map(() => (allTokens ? 1 : 0));
    if (!allTokens) {
      msgs.forEach((m, i) => {
        if (m.role !== 'assistant') return;
        const start = tok.encodeChat(msgs.slice(0, i), { addGenerationPrompt: true }).length;
        const end = tok.encodeChat(msgs.slice(0, i + 1)).length;
        for (let t = start; t < Math.min(end, mask.length); t++) mask[t] = 1;
      });
    }
    return { tokens, trainMask: mask };
  }
  throw new Error(`${where}: expected string fields "prompt" and "completion", or "messages"`);
}

export interface SftOptions {
  epochs: number;
  batchSize: number;
  lr: number;
  schedule?: ScheduleKind;
  warmupSteps?: number;
  weightDecay?: number;
  maxGradNorm?: number;
  seed?: number;
  /** Sequences longer than this are cut (the tail is dropped). */
  maxLength?: number;
  onStep?: (info: { step: number; total: number; epoch: number; loss: number; tokens: number; lr: number }) => void;
}

/** Trains the adapter in `slot` on the examples; returns the loss of every step. */
export async function trainAdapter(model: Model, slot: number, examples: SftExample[], o: SftOptions): Promise<number[]> {
  if (examples.length === 0) throw new Error('sft: no training examples');
  const rng = new Rng(o.seed ?? 0);
  const usable = examples
    .map((e) => (o.maxLength && e.tokens.length > o.maxLength ? { tokens: e.tokens.slice(0, o.maxLength), trainMask: e.trainMask.slice(0, o.maxLength) } : e))
    .filter((e) => e.trainMask.slice(1).some((m) => m > 0));
  if (usable.length === 0) throw new Error('sft: no example has a training target (check the loss mask / maxLength)');
  const perEpoch = Math.ceil(usable.length / o.batchSize);
  const total = perEpoch * o.epochs;
  const losses: number[] = [];
  let step = 0;
  for (let epoch = 0; epoch < o.epochs; epoch++) {
    const order = rng.shuffle(usable.map((_, i) => i));
    for (let b = 0; b < order.length; b += o.batchSize) {
      const batch: Sequence[] = order.slice(b, b + o.batchSize).map((i) => ({ tokens: usable[i]!.tokens, trainMask: usable[i]!.trainMask, slot }));
      step++;
      const lr = learningRate({ kind: o.schedule ?? 'constant', lr: o.lr, total, warmup: o.warmupSteps ?? 0 }, step);
      const r = await model.trainStep(batch, { mode: 'lora', lr, weightDecay: o.weightDecay ?? 0, maxGradNorm: o.maxGradNorm ?? 1, seed: (o.seed ?? 0) * 1_000_003 + step });
      const loss = r.loss.get(slot) ?? NaN;
      losses.push(loss);
      o.onStep?.({ step, total, epoch: epoch + 1, loss, tokens: batch.reduce((a, s) => a + s.tokens.length, 0), lr });
    }
  }
  return losses;
}
