// Batched generation over the native KV-cache engine: prompts are prefilled once, `n` samples per
// prompt share that prefill, and every sequence may run with its own adapter slot. The engine
// samples; this layer decides when each sequence stops (EOS ids, stop strings, length) and turns
// tokens into text.
import type { Model } from './model.js';
import type { KvCacheDtype } from './native-model.js';
import type { TextTokenizer } from './tokenizer.js';
import { createDecodeStream, type DecodeStream } from './tokenizer.js';

export interface Prompt {
  tokens: ArrayLike<number>;
  /** Adapter slot (-1 or absent = base model). */
  slot?: number;
  /**
   * Sampling seed of this prompt's samples: they then draw the same tokens whichever prompts share
   * the batch (resumable runs rely on it). Give it for every prompt or for none.
   */
  seed?: number;
}

export interface GenerateOptions {
  /** Tokens each sequence may generate (default 64). */
  maxNewTokens?: number;
  /** 0 = greedy (default). */
  temperature?: number;
  /** Keep only the k most likely tokens (0 = off). */
  topK?: number;
  /** Nucleus sampling mass (1 = off). */
  topP?: number;
  seed?: number;
  /** Samples per prompt, sharing one prefill (default 1). */
  n?: number;
  /** End-of-sequence ids (default: the model config's). The EOS token is not part of the output. */
  eosTokenIds?: readonly number[];
  /** Stop strings: generation stops once the text contains one; the text is cut before it. Needs a tokenizer. */
  stop?: readonly string[];
  /** Decodes tokens to text (completions then carry `text`). */
  tokenizer?: TextTokenizer;
  /** Refuse requests whose KV cache would exceed this many bytes (default 4 GiB). */
  maxKvBytes?: number;
  /**
   * Element type of the KV cache. 'auto' (default) = `model.defaultKvCache`: bf16 for bf16
   * weights on the CPU (half the bytes each decode step reads; attention still computes in f32),
   * f32 otherwise. 'bf16' on a backend that cannot hold it throws.
   */
  kvCache?: 'auto' | KvCacheDtype;
  /** Return each step's logits too (tests; memory grows with vocab). */
  withLogits?: boolean;
  /**
   * Decoding steps the engine runs per call before handing tokens back (default 16; with stop
   * strings 16 / the number of sequences, at least 1). The engine applies the EOS and length rules
   * itself; a stop string, which only this layer sees, ends a call's tokens at its step, and the
   * steps after it are taken back and run again without the stopped sequence. Either way the tokens
   * (and logits) are those of one step per call, to the bit. A larger value saves a round trip per
   * token (most of a small model's decoding time), costs up to that many steps again per stop string
   * hit, and delivers `generateStream`'s events in bursts.
   */
  stepsPerCall?: number;
}

export type FinishReason = 'eos' | 'stop' | 'length';

export interface Completion {
  prompt: number;
  sample: number;
  tokens: number[];
  text?: string;
  finishReason: FinishReason;
  /** Logits that produced each generated token (withLogits only). */
  logits?: Float32Array[];
}

export type GenerationEvent =
  | { type: 'token'; prompt: number; sample: number; token: number; text?: string }
  | { type: 'done'; prompt: number; sample: number; completion: Completion };

const DEFAULT_MAX_KV_BYTES = 4 * 1024 ** 3;
/** Decoding steps per engine call without stop strings (GenerateOptions.stepsPerCall). */
export const DEFAULT_STEPS_PER_CALL = 16;

interface SeqState {
  completion: Completion;
  done: boolean;
  decoder?: DecodeStream;
  text: string;
}

export async function* generateStream(model: Model, prompts: Prompt[], o: GenerateOptions = {}): AsyncGenerator<GenerationEvent> {
  const n = o.n ?? 1;
  const maxNew = o.maxNewTokens ?? 64;
  if (prompts.length === 0) throw new Error('generate: no prompts');
  if (!Number.isInteger(n) || n < 1) throw new Error(`generate: n must be a positive integer, got ${n}`);
  if (!Number.isInteger(maxNew) || maxNew < 1) throw new Error(`generate: maxNewTokens must be a positive integer, got ${maxNew}`);
  if (o.stop?.length && !o.tokenizer) throw new Error('generate: stop strings need a tokenizer (options.tokenizer)');
  const eos = new Set(o.eosTokenIds ?? model.config.eosTokenIds);
  const V = model.config.vocabSize;
  const tokens: number[] = [];
  prompts.forEach((p, i) => {
    if (p.tokens.length === 0) throw new Error(`generate: prompt ${i} is empty`);
    for (let t = 0; t < p.tokens.length; t++) {
      const id = p.tokens[t] ?? -1;
      if (!Number.isInteger(id) || id < 0 || id >= V) throw new Error(`generate: prompt ${i} token ${t} = ${id} is outside the vocabulary [0, ${V})`);
      tokens.push(id);
    }
  });
  const request = {
    tokens: Int32Array.from(tokens),
    promptLens: Int32Array.from(prompts.map((p) => p.tokens.length)),
    slots: Int32Array.from(prompts.map((p) => p.slot ?? -1)),
    n, maxNew, temperature: o.temperature ?? 0, topK: o.topK ?? 0, topP: o.topP ?? 1, seed: o.seed ?? 0,
    maxCacheBytes: o.maxKvBytes ?? DEFAULT_MAX_KV_BYTES,
    kvCache: o.kvCache ?? 'auto',
    ...(prompts.some((p) => p.seed !== undefined) ? { promptSeeds: prompts.map((p, i) => {
      if (p.seed === undefined) throw new Error(`generate: prompt ${i} has no seed while others do`);
      return p.seed;
    }) } : {}),
  };
  const withLogits = o.withLogits ?? false;
  if (o.stepsPerCall !== undefined && (!Number.isInteger(o.stepsPerCall) || o.stepsPerCall < 1))
    throw new Error(`generate: stepsPerCall must be a positive integer, got ${o.stepsPerCall}`);
  const states: SeqState[] = [];
  for (let p = 0; p < prompts.length; p++) {
    for (let s = 0; s < n; s++) {
      const decoder = o.tokenizer ? createDecodeStream(o.tokenizer, { skipSpecialTokens: true, prefixIds: Array.from(prompts[p]!.tokens).slice(-4) }) : undefined;
      states.push({ completion: { prompt: p, sample: s, tokens: [], finishReason: 'length', ...(withLogits ? { logits: [] } : {}) }, done: false, text: '', ...(decoder ? { decoder } : {}) });
    }
  }
  // With stop strings every stop in the middle of a call costs the rest of the call's steps, taken
  // back and run again (below): fewer steps per call the more sequences may stop.
  const stepsPerCall = o.stepsPerCall ?? (o.stop?.length ? Math.max(1, Math.floor(DEFAULT_STEPS_PER_CALL / states.length)) : DEFAULT_STEPS_PER_CALL);
  const begin = await model.run((h) => h.generateBegin(request, { logits: withLogits }));
  const id = begin.id;
  const eosIds = Int32Array.from(eos);
  try {
    let step: { tokens: Int32Array; seqs: Int32Array; counts: Int32Array; logits?: Float32Array } = begin;
    for (;;) {
      // The call's tokens, step by step: each one is taken as if it had come alone. A stop string
      // (which only this layer sees) ends the call's tokens at its step: the later steps ran in a
      // batch that still held the stopped sequence, so they are taken back (generateRewind) and the
      // other sequences run them again without it, exactly as one step per call would have.
      const events: GenerationEvent[] = [];
      const last = new Map<number, number>();  // sequence -> its last token, for those going on
      let at = 0, group = 0, stopped = false;
      for (; group < step.counts.length && !stopped; group++) {
        const count = step.counts[group]!;
        last.clear();
        for (let i = at; i < at + count; i++) {
          const seq = step.seqs[i]!;
          const st = states[seq]!;
          // Stops by EOS and length end a sequence in the engine too; a stop string ends the call's
          // tokens at its step (below): no token can come after a sequence's end.
          if (st.done) throw new Error(`internal: generate: a token for sequence ${seq} after its end`);
          const token = step.tokens[i]!;
          const c = st.completion;
          if (withLogits && step.logits) c.logits!.push(step.logits.slice(i * V, (i + 1) * V));
          if (eos.has(token)) {
            st.done = true;
            c.finishReason = 'eos';
          } else {
            c.tokens.push(token);
            let piece: string | undefined;
            if (st.decoder) {
              piece = st.decoder.push(token);
              st.text += piece;
            }
            events.push({ type: 'token', prompt: c.prompt, sample: c.sample, token, ...(piece !== undefined ? { text: piece } : {}) });
            const hit = o.stop?.length ? firstStop(st.text, o.stop) : -1;
            if (hit >= 0) {
              st.text = st.text.slice(0, hit);
              st.done = true;
              c.finishReason = 'stop';
              stopped = true;
            } else if (c.tokens.length >= maxNew) {
              st.done = true;
              c.finishReason = 'length';
            } else {
              last.set(seq, token);
            }
          }
          if (st.done) {
            if (st.decoder && c.finishReason !== 'stop') st.text += st.decoder.flush();
            if (st.decoder) c.text = st.text;
            events.push({ type: 'done', prompt: c.prompt, sample: c.sample, completion: c });
          }
        }
        at += count;
      }
      if (group < step.counts.length) {
        const back = new Map<number, number>();
        for (let i = at; i < step.seqs.length; i++) back.set(step.seqs[i]!, (back.get(step.seqs[i]!) ?? 0) + 1);
        await model.run((h) => h.generateRewind(id, Int32Array.from(back.keys()), Int32Array.from(back.values())));
      }
      for (const e of events) yield e;
      // Every sequence still going took a token in the last step kept: the engine stops a sequence
      // only by the EOS and length rules applied above.
      const going = states.flatMap((st, seq) => (st.done ? [] : [seq]));
      if (going.some((seq) => !last.has(seq))) throw new Error('internal: generate: the engine stopped a sequence this layer did not');
      if (going.length === 0) break;
      step = await model.run((h) => h.generateStep(id, Int32Array.from(going), Int32Array.from(going, (seq) => last.get(seq)!), {
        logits: withLogits, steps: stepsPerCall, eos: eosIds,
      }));
    }
  } finally {
    await model.run((h) => h.generateEnd(id));
  }
}

function firstStop(text: string, stops: readonly string[]): number {
  let best = -1;
  for (const s of stops) {
    if (s.length === 0) continue;
    const i = text.indexOf(s);
    if (i >= 0 && (best < 0 || i < best)) best = i;
  }
  return best;
}

/** Runs generateStream to the end and returns the completions in (prompt, sample) order. */
export async function generate(model: Model, prompts: Prompt[], options: GenerateOptions = {}): Promise<Completion[]> {
  const out: Completion[] = [];
  for await (const e of generateStream(model, prompts, options)) if (e.type === 'done') out.push(e.completion);
  return out.sort((a, b) => a.prompt - b.prompt || a.sample - b.sample);
}
