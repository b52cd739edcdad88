// `seal bench train|forward` — engine throughput on a random-weight model of a real configuration.
import { parseArgs } from 'node:util';
import {
  DEFAULT_ALPHA, DEFAULT_RANK, describePrefetch, lossOnProblem, runBench, runDecodeBench, type AbResult, type BenchResult,
} from '../../bench/engine-bench.js';
import { parseEnvList } from '../../bench/env.js';
import { formatProfile } from '../../bench/profile.js';
import { PRESET_NAMES } from '../../model/presets.js';
import { UsageError, type CliCommand } from '../command.js';

const USAGE = `usage: seal bench train|forward|decode --preset ${PRESET_NAMES.join('|')} [--batch B] [--seq T] [--threads N]
                  [--gen-batch N] [--prompt P] [--new N] [--kv-cache auto|bf16|f32] [--temperature T] [--top-p P]
                  [--steps-per-call S] [--adapters N] [--rank R] [--alpha A]
                  [--loss-on F] [--repeats R] [--warmup W] [--storage bf16|f32] [--device cpu|cuda] [--profile]
                  [--ab-env K=V[,K=V...]] [--json]

  train     LoRA SFT steps (r=16, alpha=32 on q,k,v,o,gate,up,down), loss on every token, or with
            --loss-on F (0 < F <= 1) on the last F of each sequence after a masked prompt (SEAL's
            RL SFT and ARC test-time training; the LM head runs only on the rows with a loss)
  forward   forward scoring (per-token log-probabilities)
  decode    greedy KV-cache decoding of --gen-batch prompts of --prompt tokens, --new tokens each
            (tokens/s over the tokens after the first; prefill reported separately); the KV cache
            is bf16 for bf16 weights on the CPU unless --kv-cache says otherwise. --temperature T
            (> 0) samples instead, with --top-p P (SEAL's self-edits: T 1, P 0.95); --steps-per-call S:
            decoding steps per engine call (generate's stepsPerCall; default 16); for train, training
            steps per engine call (Model.trainSteps, as SEAL's inner loop runs them; default 1)
Weights are random (bf16 storage by default). Reports the median over R timed calls after W
warm-up calls. --profile times every backend call of the timed calls and prints where a step's
time goes (per op, GEMMs per shape, and the host time between calls); on a GPU each call then
waits for its kernel; a small model's training pass, which runs as two lanes of sequences at once
(SEALKIT_SPLIT_STEP=0: whole), is profiled lane after lane (same bits). --ab-env compares two
variants in one process: each timed repeat runs a step (decode: a generation) as usual and one
with the environment variables set (the kernels' switches, e.g. SEALKIT_LOCAL_PACK=0, are read per
call), in alternating order, and reports both medians and
the median per-repeat speed ratio, with over without (above 1: faster with the variables; the line
says which in words); on a shared machine this resolves changes of a few percent that
separate runs do not. MFU is the model FLOPs per second over the peak of the instruction the
GEMMs multiply with (vdpbf16ps, AMX tiles or FP32 FMAs), measured on the same threads right after
the timed steps (about 0.1 s); on a GPU, its datasheet's dense bf16 rate. With --json the last line
is {"tokens_per_s": ..., "gflops": ..., "mfu": ..., "peak": {...}, ...} (and "profile" with
--profile, "ab" with --ab-env).
--adapters N: the batch mixes N LoRA adapters (every projection), sequence (or prompt) i under
adapter i mod N, as SEAL's inner loop trains one adapter per sequence and its evaluation scores
and decodes them; default 1 for train, 0 (the base model) for forward and decode.
--rank R, --alpha A: the adapters' rank and alpha (default 16 and 32; SEAL's SQuAD runs use 32 and
64); forward and decode need --adapters N with them.`;

/**
 * The A/B ratio (speed with the variables over speed without) in words, so that nobody reads it the
 * wrong way round: "faster with K=V (1.9 %)", "slower with K=V (2.6 %)", or the same speed.
 */
export function abVerdict(speedupWith: number, env: string): string {
  const pct = Math.abs(speedupWith - 1) * 100;
  if (pct < 0.05) return `the same speed with and without ${env}`;
  return `${speedupWith > 1 ? 'faster' : 'slower'} with ${env} (${pct.toFixed(1)} %)`;
}

/** The --ab-env lines: the variant's figures and its speed against the usual runs. */
function formatAb(ab: AbResult, step: (ms: number) => string): string {
  const env = Object.entries(ab.env).map(([k, v]) => `${k}=${v}`).join(' ');
  return `  with ${env}: ${ab.tokens_per_s.toFixed(1)} tokens/s   ${step(ab.step_ms_median)}\n` +
    `  speed with / without (median of ${ab.step_ms_all.length} repeats): ${ab.speedup_median.toFixed(3)}: ` +
    `${abVerdict(ab.speedup_median, env)}\n`;
}

/** "~470.6 GFLOP/s, 43.1% MFU (vdpbf16ps on 2 threads, measured: 1,093 GFLOP/s)", or why there is no MFU. */
function describeSpeed(r: BenchResult): string {
  const rate = `~${r.gflops.toFixed(1)} GFLOP/s`;
  if ('none' in r.peak) return `${rate} (no MFU: ${r.peak.none})`;
  return `${rate}, ${(100 * (r.mfu ?? 0)).toFixed(1)}% MFU (${r.peak.basis}: ${Math.round(r.peak.gflops).toLocaleString('en-US')} GFLOP/s)`;
}

/** ", 16 adapters" where the batch mixes adapters other than the work's default. */
const mixing = (adapters: number, usual = 0) => (adapters === usual ? '' : `, ${adapters} adapter${adapters === 1 ? '' : 's'}`);
/** ", LoRA r 32, alpha 64" where the adapters' shape is not the default's. */
const loraShape = (r: { rank?: number; alpha?: number }) =>
  r.rank === undefined || (r.rank === DEFAULT_RANK && r.alpha === DEFAULT_ALPHA) ? '' : `, LoRA r ${r.rank}, alpha ${r.alpha}`;

export const benchCommand: CliCommand = {
  name: 'bench',
  summary: 'measure training / scoring throughput on a random model of a real configuration',
  usage: USAGE,
  async run(argv) {
    const { values, positionals } = parseArgs({
      args: argv, allowPositionals: true,
      options: {
        preset: { type: 'string', default: 'smollm2-135m' }, batch: { type: 'string', default: '4' }, seq: { type: 'string', default: '256' },
        threads: { type: 'string' }, repeats: { type: 'string', default: '5' }, warmup: { type: 'string', default: '2' },
        storage: { type: 'string', default: 'bf16' }, json: { type: 'boolean' }, profile: { type: 'boolean' },
        device: { type: 'string', default: 'cpu' }, 'gen-batch': { type: 'string', default: '1' }, prompt: { type: 'string', default: '128' }, new: { type: 'string', default: '128' },
        'kv-cache': { type: 'string', default: 'auto' }, temperature: { type: 'string', default: '0' }, 'top-p': { type: 'string', default: '1' },
        'ab-env': { type: 'string' }, 'loss-on': { type: 'string' }, 'steps-per-call': { type: 'string' }, adapters: { type: 'string' },
        rank: { type: 'string' }, alpha: { type: 'string' },
      },
    });
    const work = positionals[0];
    if (work !== 'train' && work !== 'forward' && work !== 'decode') throw new UsageError(`bench: expected 'train', 'forward' or 'decode'\n${USAGE}`);
    const int = (name: string, v: string | undefined, min: number) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < min) throw new UsageError(`bench: --${name} must be an integer >= ${min}, got '${v}'`);
      return n;
    };
    if (values.storage !== 'bf16' && values.storage !== 'f32') throw new UsageError(`bench: --storage must be bf16 or f32`);
    if (values.device !== 'cpu' && values.device !== 'cuda') throw new UsageError(`bench: --device must be cpu or cuda`);
    const device = values.device;
    const kvCache = values['kv-cache'];
    if (kvCache !== 'auto' && kvCache !== 'bf16' && kvCache !== 'f32') throw new UsageError(`bench: --kv-cache must be auto, bf16 or f32`);
    if (!PRESET_NAMES.includes(values.preset ?? '')) throw new UsageError(`bench: unknown preset '${values.preset}' (${PRESET_NAMES.join(', ')})`);
    const temperature = Number(values.temperature), topP = Number(values['top-p']);
    if (!(temperature >= 0)) throw new UsageError(`bench: --temperature must be >= 0, got '${values.temperature}'`);
    if (!(topP > 0 && topP <= 1)) throw new UsageError(`bench: --top-p must be in (0, 1], got '${values['top-p']}'`);
    if (values['loss-on'] !== undefined && work !== 'train') throw new UsageError('bench: --loss-on is for train');
    if (values['steps-per-call'] !== undefined && work === 'forward') throw new UsageError('bench: --steps-per-call is for train and decode');
    const adapters = values.adapters === undefined ? undefined : int('adapters', values.adapters, work === 'train' ? 1 : 0);
    const rank = values.rank === undefined ? undefined : int('rank', values.rank, 1);
    const alpha = values.alpha === undefined ? undefined : Number(values.alpha);
    if (alpha !== undefined && !(Number.isFinite(alpha) && alpha > 0)) throw new UsageError(`bench: --alpha must be a number > 0, got '${values.alpha}'`);
    if ((rank !== undefined || alpha !== undefined) && work !== 'train' && !adapters)
      throw new UsageError(`bench: --rank and --alpha shape the adapters, and ${work} runs the base model unless --adapters N says otherwise`);
    let abEnv: Record<string, string> | undefined;
    if (values['ab-env'] !== undefined) {
      if (values.profile) throw new UsageError('bench: --ab-env and --profile cannot be combined');
      try {
        abEnv = parseEnvList(values['ab-env'], 'bench: --ab-env');
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
      if (Object.keys(abEnv).length === 0) throw new UsageError('bench: --ab-env expects K=V[,K=V...]');
    }
    if (work === 'decode') {
      const r = await runDecodeBench({
        temperature, topP,
        preset: values.preset ?? 'smollm2-135m', batch: int('gen-batch', values['gen-batch'], 1), prompt: int('prompt', values.prompt, 1),
        newTokens: int('new', values.new, 2), threads: values.threads === undefined ? 0 : int('threads', values.threads, 1),
        repeats: int('repeats', values.repeats, 1), warmup: int('warmup', values.warmup, 0), storage: values.storage, device, kvCache,
        profile: values.profile, adapters, rank, alpha, abEnv,
        ...(values['steps-per-call'] !== undefined ? { stepsPerCall: int('steps-per-call', values['steps-per-call'], 1) } : {}),
        onProgress: values.json ? undefined : (d, t) => process.stderr.write(`\r  run ${d}/${t}`),
      });
      if (values.json) process.stdout.write(`${JSON.stringify(r)}\n`);
      else process.stdout.write(`\ndecode ${r.preset} batch ${r.batch}${mixing(r.adapters)}${loraShape(r)}, prompt ${values.prompt} + ${values.new} new, ${r.sampling}, ${r.threads} threads (${r.isa}, ${r.storage} weights, ${r.kv_cache} KV cache, ${r.steps_per_call} steps per call${r.prefetch ? `, weights prefetched ${describePrefetch(r.prefetch)}` : ''}${r.rows_on_amx ? ', rows on AMX tiles' : ''}${r.rows_on_packed_strips ? ', weights read as packed strips' : ''}${r.weights_coded ? `, weights coded in 12 bits (${(r.weight_bytes_read / 1e6).toFixed(1)} of ${(r.weight_bytes / 1e6).toFixed(1)} MB per step)` : ''})\n  ${r.tokens_per_s.toFixed(1)} tokens/s   ${r.step_ms_median.toFixed(2)} ms/token step   prefill ${r.prefill_ms_median.toFixed(1)} ms   ${describeSpeed(r)}\n`);
      if (!values.json && r.inline_share) {
        process.stdout.write(`  ${(100 * r.inline_share).toFixed(0)}% of the timed decoding calls ran inline on one thread (measured faster for calls this small)\n`);
      }
      if (!values.json && r.profile) process.stdout.write(formatProfile(r.profile));
      if (!values.json && r.ab) process.stdout.write(formatAb(r.ab, (ms) => `${ms.toFixed(2)} ms/token step`));
      return 0;
    }
    const seq = int('seq', values.seq, 2);
    const lossOn = values['loss-on'] === undefined ? undefined : Number(values['loss-on']);
    const problem = lossOn === undefined ? undefined : lossOnProblem(work, seq, lossOn);
    if (problem) throw new UsageError(`bench: --loss-on '${values['loss-on']}' ${problem}`);
    const result = await runBench(work, {
      preset: values.preset ?? 'smollm2-135m', batch: int('batch', values.batch, 1), seq,
      threads: values.threads === undefined ? 0 : int('threads', values.threads, 1),
      repeats: int('repeats', values.repeats, 1), warmup: int('warmup', values.warmup, 0), storage: values.storage, device,
      profile: values.profile, abEnv, lossOn, adapters, rank, alpha,
      ...(values['steps-per-call'] !== undefined ? { stepsPerCall: int('steps-per-call', values['steps-per-call'], 1) } : {}),
      onProgress: values.json ? undefined : (d, t) => process.stderr.write(`\r  ${abEnv ? 'repeat' : 'step'} ${d}/${t}`),
    });
    if (!values.json) process.stderr.write('\n');
    if (values.json) {
      process.stdout.write(`${JSON.stringify(result)}\n`);
    } else {
      process.stdout.write(
        `${result.work} ${result.preset} batch ${result.batch} x ${result.seq}${mixing(result.adapters, result.work === 'train' ? 1 : 0)}${loraShape(result)}${result.loss_on !== undefined && result.loss_on < 1 ? ` (loss on the last ${result.loss_on})` : ''}${(result.steps_per_call ?? 1) > 1 ? `, ${result.steps_per_call} steps per call` : ''}, ${result.threads} threads (${result.isa}, ${result.storage} weights)\n` +
          `  ${result.tokens_per_s.toFixed(1)} tokens/s   median step ${result.step_ms_median.toFixed(result.step_ms_median < 10 ? 2 : 1)} ms   ${describeSpeed(result)}\n`,
      );
      if (result.inline_share) {
        process.stdout.write(`  ${(100 * result.inline_share).toFixed(0)}% of the timed steps ran inline on one thread (measured faster for steps this small)\n`);
      }
      if (result.profile) process.stdout.write(formatProfile(result.profile));
      if (result.ab) process.stdout.write(formatAb(result.ab, (ms) => `median step ${ms.toFixed(1)} ms`));
    }
    return 0;
  },
};
