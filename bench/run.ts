// sealkit benchmark suite: the engine against a tuned PyTorch peer on the same model shapes, with
// this machine's measured FP32/BF16 compute peaks and memory bandwidth for MFU figures and the
// decode weight-streaming bound.
//
//   npm run bench [-- --quick] [-- --threads N] [-- --json] [-- --rounds R] [-- --storage bf16|f32]
//
// Every measurement is a fresh child process (`node bin/seal.js bench ... --json`, or
// `python3 bench/peer_torch.py ...`). Engine and peer runs alternate within each round, so machine
// noise hits both; the reported figure per contestant is the median over rounds of each run's
// median step time. See bench/README.md.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { decodeKvCacheBytes, decodeWeightBytes, streamingBound } from '../lib/bench/decode-bytes.js';
import { describePrefetch, flopsPerToken, loraFlopsPerToken } from '../lib/bench/engine-bench.js';
import { median } from '../lib/bench/median.js';
import { buildPeak } from '../lib/bench/peak.js';
import {
  computeBoundTps, describeBoundTarget, describeRatioTarget, describeTargetBeyondBound, describeTargetOfComputeBound, targetVerdicts,
  type TargetVerdicts,
} from '../lib/bench/targets.js';
import { presetConfig, presetRawConfig } from '../lib/model/presets.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TCMALLOC = '/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4';
const OPENBLAS_OMP = '/usr/lib/x86_64-linux-gnu/openblas-openmp';
/** Other processes' average CPU use above which a run counts as contended (and is re-measured). */
const CONTENDED_CPUS = 0.3;

type Work = 'train' | 'forward' | 'decode';
type PeerMode = 'fp32' | 'bf16-autocast' | 'bf16-weights';

interface Case {
  id: string;
  preset: string;
  work: Work;
  /** train/forward: sequences per step; decode: prompts decoded together (`--gen-batch`). */
  batch: number;
  /** train/forward: tokens per sequence; decode: prompt + newTokens (as the engine reports it). */
  seq: number;
  /** decode only: random prompt tokens per sequence, and tokens generated per sequence. */
  prompt?: number;
  newTokens?: number;
  /** decode only: sample at this temperature with this top-p (both sides); absent: greedy. */
  sampling?: { temperature: number; topP: number };
  /** A W/R pair: W warm-up calls, then R timed calls (decode: whole generations). */
  warmup: number;
  repeats: number;
  peerModes: PeerMode[];
  /**
   * train: the batch mixes this many adapters, one per batch / adapters sequences (the engine in one
   * step; the peer, which trains one adapter per step, one step per adapter in turn).
   */
  adapters?: number;
  /** The issue's target for engine / best peer, where it states one (shown as met / not met). */
  target?: number;
  /** train: the issue's target for the engine's MFU against the BF16 peak (a fraction). */
  mfuTarget?: number;
  /** decode: the issue's target for the engine's share of the weight-streaming bound (a fraction). */
  boundTarget?: number;
}

/** A decode case: seq is prompt + new, as `seal bench decode --json` reports it. */
const decodeCase = (id: string, preset: string, batch: number, prompt: number, newTokens: number, warmup: number, repeats: number, peerModes: PeerMode[],
  sampling?: Case['sampling'], targets?: Pick<Case, 'target' | 'boundTarget'>): Case =>
  ({ id, preset, work: 'decode', batch, seq: prompt + newTokens, prompt, newTokens, warmup, repeats, peerModes, sampling, ...targets });

/** How a case's shape is printed: `4x256`, or `b1 128+128` for decode (batch, prompt + new; ` T1 p0.95` when sampled). */
const shape = (c: Case) => (c.work === 'decode'
  ? `b${c.batch} ${c.prompt}+${c.newTokens}${c.sampling ? ` T${c.sampling.temperature} p${c.sampling.topP}` : ''}`
  : `${c.batch}x${c.seq}${c.adapters ? ` ${c.adapters} adapters` : ''}`);
/** SEAL's self-edit sampling (knowledge incorporation): temperature 1, top-p 0.95. */
const SEAL_SAMPLING = { temperature: 1, topP: 0.95 };

interface Run {
  /** CPUs' worth of other load seen just before the run started (see waitQuiet). */
  other_load_cpus: number | null;
  /** CPUs' worth of load from other processes, averaged over the run itself (see measured). */
  other_during_cpus: number | null;
  /** How many times this measurement was taken (re-runs after contention). */
  attempts: number;
  /** Machine-speed probe (FP32 FMA GFLOP/s on all threads) just before and just after the run. */
  probe_before: number | null;
  probe_after: number | null;
  /** Core-to-core cache-line round trip (ns) in those probes, the larger (null: not measured). */
  round_trip_ns: number | null;
  /** Decode runs: the read-only stream bandwidth (GB/s) of those probes, the larger (null: not measured). */
  read_gbs_around: number | null;
  tokens_per_s: number;
  step_ms_median: number;
  step_ms_all: number[];
  wall_s: number;
  extra: Record<string, unknown>;
}

interface Contestant {
  key: string; // 'engine' | 'pytorch <mode>'
  label: string;
  runs: (Run | { error: string })[];
}

// ------------------------------------------------------------------------------------ options

const { values: opts } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    threads: { type: 'string', default: '2' },
    json: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    storage: { type: 'string', default: 'bf16' },
    python: { type: 'string', default: '/usr/bin/python3' },
    'no-peer': { type: 'boolean', default: false },
    'no-engine': { type: 'boolean', default: false },
    'max-wait': { type: 'string' },
    retries: { type: 'string' },
    only: { type: 'string' },
    rank: { type: 'string', default: '16' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (opts.help) {
  process.stdout.write(`usage: npm run bench -- [--quick] [--threads N] [--json] [--rounds R] [--storage bf16|f32]
                        [--python PATH] [--max-wait S] [--retries K] [--only IDS] [--rank R] [--no-peer] [--no-engine]
  --quick      smoke run: small shapes, 1 round, few repeats (~1-2 minutes on a quiet machine)
  --threads N  threads for the engine, the peer and the peak measurement (default 2)
  --json       also print one JSON object with every row as the last stdout line
  --rounds R   engine/peer alternation rounds (default 3, quick 1)
  --storage    engine weight storage (default bf16)
  --python     interpreter with torch for the peer (default /usr/bin/python3)
  --max-wait S before each measurement wait up to S seconds for other load on the CPUs to go
               away (default 60, quick 10; 0 disables)
  --retries K  re-run a measurement up to K times when other processes used more than 0.3 CPUs
               on average while it ran (default 2, quick 1)
  --rank R     the LoRA rank of every training case, engine and peer alike, alpha 2R (default 16, alpha
               32: the issue's targets are stated there; SEAL's SQuAD runs use 32)
  --only IDS   run only these benchmarks (comma-separated: smollm2-train, smollm2-forward,
               smollm2-decode-b1, smollm2-decode-b8, smollm2-decode-b8-sampled, tiny-train, tiny-train-b1,
               tiny-train-16-adapters, tiny-forward; quick: smollm2-train, smollm2-forward,
               smollm2-decode-b1, tiny-train, tiny-train-b1, tiny-train-16-adapters)
`);
  process.exit(0);
}

const threads = Number(opts.threads);
if (!Number.isInteger(threads) || threads < 1) fail(`--threads must be a positive integer, got '${opts.threads}'`);
const rounds = opts.rounds === undefined ? (opts.quick ? 1 : 3) : Number(opts.rounds);
if (!Number.isInteger(rounds) || rounds < 1) fail(`--rounds must be a positive integer, got '${opts.rounds}'`);
const maxWaitS = opts['max-wait'] === undefined ? (opts.quick ? 10 : 60) : Number(opts['max-wait']);
if (!Number.isFinite(maxWaitS) || maxWaitS < 0) fail(`--max-wait must be a number of seconds >= 0`);
const retries = opts.retries === undefined ? (opts.quick ? 1 : 2) : Number(opts.retries);
if (!Number.isInteger(retries) || retries < 0) fail(`--retries must be an integer >= 0`);
const storage = opts.storage;
if (storage !== 'bf16' && storage !== 'f32') fail(`--storage must be bf16 or f32`);
const loraRank = Number(opts.rank);
if (!Number.isInteger(loraRank) || loraRank < 1) fail(`--rank must be a positive integer, got '${opts.rank}'`);
// SEAL's scale alpha / r = 2 at every rank (r 16, alpha 32 as the issue's cases; r 32, alpha 64 as SEAL's SQuAD runs).
const loraAlpha = 2 * loraRank;
const loraArgs = ['--rank', String(loraRank), '--alpha', String(loraAlpha)];

function fail(msg: string): never {
  process.stderr.write(`bench: ${msg}\n`);
  process.exit(2);
}

const ALL_PEER: PeerMode[] = ['fp32', 'bf16-autocast', 'bf16-weights'];
// Decode peer modes: autocast re-casts every fp32 weight to bf16 at every step (weights that need
// no gradient get no autocast cast cache), so it cannot beat bf16-weights there and is left out.
const DECODE_PEER: PeerMode[] = ['fp32', 'bf16-weights'];
/** The issue's target for the tiny-preset LoRA step: the engine at least 5x the best PyTorch mode. */
const TINY_TRAIN_TARGET = 5;
// The issue gives the tiny step no shape; it asks for 5x because per-call overhead matters in SEAL's
// small inner loops. Those train on one sequence per step (knowledge incorporation: batch 1, ~50
// tokens, 10 epochs; the reference's seal-method.md), so the suite times that shape (1 x 64) as
// well as the SmolLM2 rows' 4 x 256, where a tiny step is 5.4 GFLOP of compute, not overhead.
const TINY_INNER = { id: 'tiny-train-b1', preset: 'tiny', work: 'train', batch: 1, seq: 64, peerModes: ALL_PEER, target: TINY_TRAIN_TARGET } as const;
// The inner loop as SEAL runs it here (lib/seal/inner-loop.ts): 16 self-edits' adapters trained
// together, one sequence each per step. The engine runs them as one batch that mixes the adapters;
// the peer (PEFT trains one adapter per step) runs a step of each adapter in turn.
const TINY_INNER_16 = { id: 'tiny-train-16-adapters', preset: 'tiny', work: 'train', batch: 16, seq: 64, adapters: 16, peerModes: ALL_PEER, target: TINY_TRAIN_TARGET } as const;
const SUITE: Case[] = opts.quick
  ? [
      { id: 'smollm2-train', preset: 'smollm2-135m', work: 'train', batch: 1, seq: 64, warmup: 1, repeats: 2, peerModes: ALL_PEER },
      { id: 'smollm2-forward', preset: 'smollm2-135m', work: 'forward', batch: 1, seq: 64, warmup: 1, repeats: 3, peerModes: ALL_PEER },
      decodeCase('smollm2-decode-b1', 'smollm2-135m', 1, 32, 16, 1, 2, DECODE_PEER),
      { id: 'tiny-train', preset: 'tiny', work: 'train', batch: 4, seq: 64, warmup: 2, repeats: 5, peerModes: ALL_PEER, target: TINY_TRAIN_TARGET },
      { ...TINY_INNER, peerModes: [...TINY_INNER.peerModes], warmup: 3, repeats: 20 },
      { ...TINY_INNER_16, peerModes: [...TINY_INNER_16.peerModes], warmup: 2, repeats: 5 },
    ]
  : [
      // SmolLM2 LoRA steps take seconds each: 1 warm-up + 3 timed steps per process.
      // The issue's targets: training >= 1.5x and >= 50 % of the BF16 peak, scoring >= 1.5x.
      { id: 'smollm2-train', preset: 'smollm2-135m', work: 'train', batch: 4, seq: 256, warmup: 1, repeats: 3, peerModes: ALL_PEER, target: 1.5, mfuTarget: 0.5 },
      { id: 'smollm2-forward', preset: 'smollm2-135m', work: 'forward', batch: 4, seq: 256, warmup: 1, repeats: 5, peerModes: ALL_PEER, target: 1.5 },
      // Greedy KV-cache decode, 128 random prompt tokens + 128 new; every timed call is a whole
      // generation (1 warm-up + 3 timed per process). Targets: >= 3x, and at batch 1 >= 70 % of
      // the weight-streaming bound.
      decodeCase('smollm2-decode-b1', 'smollm2-135m', 1, 128, 128, 1, 3, DECODE_PEER, undefined, { target: 3, boundTarget: 0.7 }),
      decodeCase('smollm2-decode-b8', 'smollm2-135m', 8, 128, 128, 1, 3, DECODE_PEER, undefined, { target: 3 }),
      // The same at SEAL's self-edit sampling: the sampler's cost per token shows up here.
      decodeCase('smollm2-decode-b8-sampled', 'smollm2-135m', 8, 128, 128, 1, 3, ['bf16-weights'], SEAL_SAMPLING),
      { id: 'tiny-train', preset: 'tiny', work: 'train', batch: 4, seq: 256, warmup: 3, repeats: 10, peerModes: ALL_PEER, target: TINY_TRAIN_TARGET },
      // Steps of a few milliseconds: more of them per process for a stable median.
      { ...TINY_INNER, peerModes: [...TINY_INNER.peerModes], warmup: 10, repeats: 100 },
      { ...TINY_INNER_16, peerModes: [...TINY_INNER_16.peerModes], warmup: 3, repeats: 20 },
      { id: 'tiny-forward', preset: 'tiny', work: 'forward', batch: 4, seq: 256, warmup: 3, repeats: 10, peerModes: ALL_PEER },
    ];

if (opts.only !== undefined) {
  const want = opts.only.split(',').map((x) => x.trim()).filter(Boolean);
  const unknown = want.filter((id) => !SUITE.some((c) => c.id === id));
  if (unknown.length) fail(`--only: unknown benchmark ${unknown.join(', ')} (known here: ${SUITE.map((c) => c.id).join(', ')})`);
  SUITE.splice(0, SUITE.length, ...SUITE.filter((c) => want.includes(c.id)));
}

// ------------------------------------------------------------------------------------ helpers

const log = (s: string) => process.stderr.write(`${s}\n`);

interface ChildResult { code: number | null; stdout: string; stderr: string; wall_s: number; timedOut: boolean }

const liveChildren = new Set<ReturnType<typeof spawn>>();

function runChild(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number, input?: string): Promise<ChildResult> {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { cwd: ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
    liveChildren.add(child);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, timeoutMs);
    child.on('error', (err) => { stderr += String(err); });
    child.on('close', (code) => {
      liveChildren.delete(child);
      clearTimeout(timer);
      resolve({ code, stdout, stderr, wall_s: Number(process.hrtime.bigint() - t0) / 1e9, timedOut });
    });
    child.stdin.end(input ?? '');
  });
}

function lastJson(stdout: string): Record<string, unknown> | null {
  const lines = stdout.trim().split('\n').reverse();
  for (const line of lines) {
    const t = line.trim();
    if (!t.startsWith('{')) continue;
    try { return JSON.parse(t) as Record<string, unknown>; } catch { return null; }
  }
  return null;
}

function whyFailed(r: ChildResult): string {
  if (r.timedOut) return 'timed out';
  const lines = `${r.stderr}\n${r.stdout}`.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('npm warn'));
  const msg = lines.find((l) => /error/i.test(l)) ?? lines.at(-1) ?? '';
  return `exit ${r.code}: ${msg.slice(0, 300)}`;
}

function toRun(r: ChildResult): Run | { error: string } {
  const j = r.code === 0 ? lastJson(r.stdout) : null;
  if (!j || typeof j.tokens_per_s !== 'number' || typeof j.step_ms_median !== 'number') return { error: whyFailed(r) };
  const { tokens_per_s, step_ms_median, step_ms_all, ...extra } = j;
  return { other_load_cpus: null, other_during_cpus: null, attempts: 1, probe_before: null, probe_after: null, round_trip_ns: null, read_gbs_around: null, tokens_per_s, step_ms_median, step_ms_all: Array.isArray(step_ms_all) ? (step_ms_all as number[]) : [], wall_s: r.wall_s, extra };
}

const isRun = (x: Run | { error: string }): x is Run => 'tokens_per_s' in x;

function cpuFlags(): Set<string> {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags'));
    return new Set((line?.split(':')[1] ?? '').trim().split(/\s+/));
  } catch {
    return new Set();
  }
}

function machine(): Record<string, unknown> {
  const ls = spawnSync('lscpu', [], { encoding: 'utf8' });
  const field = (name: string) => ls.stdout?.split('\n').find((l) => l.startsWith(`${name}:`))?.split(':').slice(1).join(':').trim() ?? null;
  const flags = cpuFlags();
  return {
    model_name: field('Model name') ?? os.cpus()[0]?.model ?? null,
    cpus: os.cpus().length,
    cores_per_socket: field('Core(s) per socket'),
    sockets: field('Socket(s)'),
    threads_per_core: field('Thread(s) per core'),
    hypervisor: field('Hypervisor vendor'),
    mem_gib: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    isa_flags: ['avx2', 'fma', 'avx512f', 'avx512_bf16', 'avx512_vnni', 'amx_bf16'].filter((f) => flags.has(f)),
    kernel: os.release(),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function cpuTimes(): { busy: number; total: number } | null {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    return { busy: total - (f[3] ?? 0) - (f[4] ?? 0), total };
  } catch {
    return null;
  }
}

/** CPU time (user + system) of this process and its reaped children, in the same ticks as /proc/stat. */
function ownTicks(): number | null {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
    // Fields 14-17 of proc(5): utime, stime, cutime, cstime (rest[0] is field 3).
    return rest[11]! + rest[12]! + rest[13]! + rest[14]!;
  } catch {
    return null;
  }
}

/** Runs a child and reports the other processes' average CPU use while it ran. */
async function measured(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ res: ChildResult; other: number | null }> {
  const s0 = cpuTimes();
  const o0 = ownTicks();
  const res = await runChild(cmd, args, env, 600_000);
  const s1 = cpuTimes();
  const o1 = ownTicks();
  if (!s0 || !s1 || o0 === null || o1 === null || s1.total <= s0.total) return { res, other: null };
  const wallTicks = (s1.total - s0.total) / os.cpus().length;
  return { res, other: Math.max(0, (s1.busy - s0.busy - (o1 - o0)) / wallTicks) };
}

/** CPUs' worth of load from other processes over a short window (this process is idle meanwhile). */
async function otherLoad(windowMs = 300): Promise<number | null> {
  const a = cpuTimes();
  await sleep(windowMs);
  const b = cpuTimes();
  if (!a || !b || b.total <= a.total) return null;
  return ((b.busy - a.busy) / (b.total - a.total)) * os.cpus().length;
}

/**
 * The machine is shared: wait (up to --max-wait seconds) until other processes use less than a
 * quarter of a CPU, so a measurement does not start inside someone else's job. Returns the load
 * seen when it gave up waiting or found the machine quiet.
 */
let waitedS = 0;
async function waitQuiet(): Promise<number | null> {
  const t0 = Date.now();
  let load = await otherLoad();
  let said = false;
  while (load !== null && load > 0.25 && (Date.now() - t0) / 1000 < maxWaitS) {
    if (!said) { log(`  other load on the CPUs (${load.toFixed(2)} CPUs busy): waiting up to ${maxWaitS} s for it to pass ...`); said = true; }
    await sleep(1000);
    load = await otherLoad();
  }
  waitedS += (Date.now() - t0) / 1000;
  return load;
}

// ------------------------------------------------------------------------------------ setup

const tmp = mkdtempSync(join(os.tmpdir(), 'sealkit-bench-'));
process.on('exit', () => {
  for (const child of liveChildren) child.kill('SIGKILL');
  rmSync(tmp, { recursive: true, force: true });
});
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

const started = new Date();
const mach = machine();
const flags = cpuFlags();
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
const versions: Record<string, string | null> = { sealkit: pkg.version, node: process.version, torch: null, cc: null };
const skipped: string[] = [];
log(`sealkit bench${opts.quick ? ' --quick' : ''}: ${threads} threads, ${rounds} round(s), ${mach.model_name} (${mach.cpus} CPUs), LoRA r ${loraRank}, alpha ${loraAlpha}`);

// Peaks: build bench/peak.c for this machine and run it once, before the suite.
type Stat = { best: number; median: number; trials: number };
let peaks: Record<string, unknown> | null = null;
const peakExe = join(tmp, 'peak');
let peakBuilt = false;
{
  const exe = peakExe;
  const built = buildPeak(ROOT, exe);
  versions.cc = spawnSync('cc', ['--version'], { encoding: 'utf8' }).stdout?.split('\n')[0] ?? null;
  if (!built.ok) {
    skipped.push(`peaks skipped: cc failed (${built.error})`);
  } else {
    const args = ['--threads', String(threads), ...(opts.quick ? ['--trials', '3', '--ms', '50', '--stream-mib', '256'] : ['--trials', '7', '--ms', '100', '--stream-mib', '1024'])];
    // Like the measurements: re-run while other processes shared the CPUs, keep the quietest.
    let leastOther = Infinity;
    for (let attempt = 1; attempt <= retries + 1; attempt++) {
      await waitQuiet();
      log(`measuring peaks (bench/peak.c)${attempt > 1 ? ' again' : ''} ...`);
      const { res, other } = await measured(exe, args, process.env);
      const j = res.code === 0 ? lastJson(res.stdout) : null;
      if (!j) { if (!peaks) skipped.push(`peaks skipped: ${whyFailed(res)}`); break; }
      if ((other ?? 0) < leastOther) { peaks = { ...j, other_during_cpus: other }; leastOther = other ?? 0; }
      if (other === null || other <= CONTENDED_CPUS) break;
      if (attempt <= retries) log(`  other processes used ${other.toFixed(2)} CPUs during the peak measurement`);
    }
    peakBuilt = true;
  }
}
const peakOf = (k: string): number | null => ((peaks?.[k] as Stat | undefined)?.best ?? null);
// MFU references: the N-thread rate, or N x the 1-thread rate if that is higher (per-core peak x
// cores, the usual definition; an N-thread trial shares the CPUs with whatever else runs), and for
// FP32 also any higher rate a probe sees during the suite. A low reference would flatter MFU.
// Bandwidths pass oneFactor 1: one thread's rate is not multiplied, the memory is shared.
const scaled = (nt: string, one: string, oneFactor = threads): number | null => {
  const a = peakOf(nt), b = peakOf(one);
  return a === null && b === null ? null : Math.max(a ?? 0, (b ?? 0) * oneFactor);
};
let PEAK_FP32 = scaled('fp32_fma_gflops_nt', 'fp32_fma_gflops_1t');
// The BF16 reference is the fastest bf16 unit the CPU has: AMX tiles where present (both the engine
// and PyTorch's oneDNN use them), else vdpbf16ps. Against vdpbf16ps alone, AMX runs read as >100 %.
const PEAK_BF16_DOT = scaled('bf16_dot_gflops_nt', 'bf16_dot_gflops_1t');
const PEAK_AMX = scaled('amx_bf16_gflops_nt', 'amx_bf16_gflops_1t');
const PEAK_BF16 = PEAK_AMX !== null && PEAK_AMX > (PEAK_BF16_DOT ?? 0) ? PEAK_AMX : PEAK_BF16_DOT;
const PEAK_BF16_UNIT = PEAK_BF16 !== null && PEAK_BF16 === PEAK_AMX ? 'AMX bf16' : 'BF16 dot';

/** MiB the probes around decoding's runs stream, and the read bandwidths they measured (GB/s). */
const PROBE_READ_MIB = 256;
const probeReadGbs: number[] = [];

/**
 * A ~0.1 s probe on all threads (with `bandwidth`, also the read-only stream, ~0.2 s more): the median FP32 FMA GFLOP/s (how fast the machine is right now) and
 * the core-to-core round trip in ns (whether the threads' CPUs share a cache right now); null where
 * not measured (no peak program, or one thread).
 */
async function probe(bandwidth = false): Promise<{ gflops: number | null; roundTripNs: number | null; readGbs?: number }> {
  if (!peakBuilt) return { gflops: null, roundTripNs: null };
  const r = await runChild(peakExe, ['--probe', '--threads', String(threads), ...(bandwidth ? ['--read-mib', String(PROBE_READ_MIB)] : [])],
    process.env, 30_000);
  const j = r.code === 0 ? lastJson(r.stdout) : null;
  const read = j?.read_gbs_nt as Stat | undefined;
  const readGbs = read && read.best > 0 ? read.best : undefined;
  if (readGbs !== undefined) probeReadGbs.push(readGbs);
  const roundTripNs = typeof j?.core_round_trip_ns === 'number' && j.core_round_trip_ns > 0 ? j.core_round_trip_ns : null;
  const s = j?.fp32_fma_gflops_nt as Stat | undefined;
  if (!s) return { gflops: null, roundTripNs, readGbs };
  if (PEAK_FP32 === null || s.best > PEAK_FP32) PEAK_FP32 = s.best;
  return { gflops: s.median, roundTripNs, readGbs };
}

// Engine probe: a one-step run on the tiny preset tells whether the addon is built.
let engineOk = !opts['no-engine'];
if (opts['no-engine']) skipped.push('engine skipped: --no-engine');
else {
  const probeEngine = () => runChild(process.execPath, [join(ROOT, 'bin', 'seal.js'), 'bench', 'forward', '--preset', 'tiny', '--batch', '1', '--seq', '8', '--repeats', '1', '--warmup', '0', '--threads', String(threads), '--json'], process.env, 180_000);
  let r = await probeEngine();
  // Once more after a pause: a rebuild in progress (npm run build:native) removes the addon for a while.
  if (!isRun(toRun(r))) { await sleep(10_000); r = await probeEngine(); }
  if (!isRun(toRun(r))) {
    engineOk = false;
    skipped.push(`engine skipped: ${whyFailed(r)} (build it with \`npm run build:native\`)`);
  }
}

// Peer: the tuned environment (see bench/README.md) and a torch probe.
const peerEnv: NodeJS.ProcessEnv = { ...process.env, OMP_NUM_THREADS: String(threads), TCMALLOC_RELEASE_RATE: '0' };
if (existsSync(TCMALLOC)) peerEnv.LD_PRELOAD = [TCMALLOC, process.env.LD_PRELOAD].filter(Boolean).join(':');
if (existsSync(OPENBLAS_OMP)) peerEnv.LD_LIBRARY_PATH = [OPENBLAS_OMP, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':');
// OpenBLAS 0.3.21 does not recognise the newest cores and falls back to its AVX2 kernels; its
// SkylakeX kernels need AVX-512 (forcing them elsewhere would crash), and a user's choice wins.
if (!process.env.OPENBLAS_CORETYPE && flags.has('avx512f')) peerEnv.OPENBLAS_CORETYPE = 'SkylakeX';
const peerEnvShown = Object.fromEntries(['LD_PRELOAD', 'TCMALLOC_RELEASE_RATE', 'LD_LIBRARY_PATH', 'OPENBLAS_CORETYPE', 'OMP_NUM_THREADS'].map((k) => [k, peerEnv[k] ?? null]));

// The peer's own fp32 matmul speed, measured in its environment: without the Debian OpenBLAS
// build, torch 1.13 multiplies fp32 through whatever libblas.so.3 points to (the reference BLAS
// runs at a few GFLOP/s), and every ratio against an fp32 mode would flatter the engine.
const PEER_PROBE = `
import json, time, torch
torch.set_num_threads(${threads})
a, b = torch.randn(512, 576), torch.randn(576, 1536)
a @ b
best = 0.0
for _ in range(5):
    t = time.perf_counter(); a @ b; s = time.perf_counter() - t
    best = max(best, 2 * 512 * 576 * 1536 / s / 1e9)
print(json.dumps({"torch": torch.__version__, "fp32_matmul_gflops": best}))
`;
/** Below this share of the FP32 FMA peak the peer's fp32 matmul is not a tuned BLAS. */
const PEER_BLAS_SLOW_SHARE = 0.25;
const peerWarnings: string[] = [];
let peerMatmulGflops: number | null = null;

let peerOk = !opts['no-peer'];
if (opts['no-peer']) skipped.push('peer skipped: --no-peer');
else {
  const r = await runChild(opts.python!, ['-c', PEER_PROBE], peerEnv, 120_000);
  const j = r.code === 0 ? lastJson(r.stdout) : null;
  if (j) {
    versions.torch = String(j.torch);
    peerMatmulGflops = Number(j.fp32_matmul_gflops);
    if (!existsSync(OPENBLAS_OMP)) peerWarnings.push('peer warning: libopenblas0-openmp is not installed, so torch multiplies fp32 through the system libblas.so.3');
    if (!existsSync(TCMALLOC)) peerWarnings.push('peer warning: libtcmalloc-minimal4 is not installed, so the peer pays glibc malloc\'s page faults every step');
    const share = PEAK_FP32 ? peerMatmulGflops / PEAK_FP32 : null;
    if (share !== null && share < PEER_BLAS_SLOW_SHARE) {
      peerWarnings.push(`peer warning: torch's fp32 matmul (512x576 @ 576x1536) ran at ${peerMatmulGflops.toFixed(1)} GFLOP/s, ` +
        `${(100 * share).toFixed(1)} % of the FP32 FMA peak: ratios against the fp32 mode flatter the engine`);
    }
    // A core type inherited from the environment keeps OpenBLAS on those kernels (a user's choice
    // wins): name it where it is not the AVX-512 one the bench would set.
    const inherited = process.env.OPENBLAS_CORETYPE;
    if (inherited && flags.has('avx512f') && inherited.toLowerCase() !== 'skylakex') {
      peerWarnings.push(`peer warning: OPENBLAS_CORETYPE=${inherited} comes from the environment and keeps OpenBLAS off its AVX-512 ` +
        'kernels (the bench would set SkylakeX on this CPU): unset it for the peer\'s fastest fp32 (bench/README.md)');
    }
    if (!existsSync(OPENBLAS_OMP) || !existsSync(TCMALLOC))
      peerWarnings.push('peer warning: `apt-get install -y libopenblas0-openmp libtcmalloc-minimal4` gives the peer the tuned environment (bench/README.md)');
  } else {
    peerOk = false;
    const plain = await runChild(opts.python!, ['-c', 'import torch'], process.env, 120_000);
    skipped.push(plain.code === 0
      ? `peer skipped: torch imports but not in the tuned environment (${whyFailed(r)})`
      : `peer skipped: python3-torch not installed (${opts.python} -c "import torch" failed)`);
  }
}
for (const s of [...skipped, ...peerWarnings]) log(s);

const configPath = (preset: string): string => {
  const p = join(tmp, `${preset}.json`);
  if (!existsSync(p)) writeFileSync(p, JSON.stringify(presetRawConfig(preset)));
  return p;
};

// ------------------------------------------------------------------------------------ suite

/** `--temperature T --top-p P` for a sampled decode case (both sides spell them so). */
const samplingArgs = (c: Case) => (c.sampling ? ['--temperature', String(c.sampling.temperature), '--top-p', String(c.sampling.topP)] : []);

function engineArgs(c: Case): string[] {
  const shapeArgs = c.work === 'decode'
    ? ['--gen-batch', String(c.batch), '--prompt', String(c.prompt), '--new', String(c.newTokens), ...samplingArgs(c)]
    : ['--batch', String(c.batch), '--seq', String(c.seq), ...(c.adapters ? ['--adapters', String(c.adapters)] : []),
        ...(c.work === 'train' ? loraArgs : [])];
  return [join(ROOT, 'bin', 'seal.js'), 'bench', c.work, '--preset', c.preset, ...shapeArgs,
    '--threads', String(threads), '--repeats', String(c.repeats), '--warmup', String(c.warmup), '--storage', storage!, '--json'];
}

function peerArgs(c: Case, mode: PeerMode): string[] {
  const shapeArgs = c.work === 'decode'
    ? ['--batch', String(c.batch), '--prompt', String(c.prompt), '--new', String(c.newTokens), ...samplingArgs(c)]
    : c.adapters
      ? ['--batch', String(c.batch / c.adapters), '--adapters', String(c.adapters), '--seq', String(c.seq), ...loraArgs]
      : ['--batch', String(c.batch), '--seq', String(c.seq), ...loraArgs];
  return [join(ROOT, 'bench', 'peer_torch.py'), '--config', configPath(c.preset), '--name', c.preset, '--work', c.work, '--dtype', mode,
    ...shapeArgs, '--threads', String(threads), '--repeats', String(c.repeats), '--warmup', String(c.warmup), '--quiet'];
}

interface CaseResult { c: Case; contestants: Contestant[] }
const results: CaseResult[] = [];
const total = SUITE.reduce((n, c) => n + rounds * ((engineOk ? 1 : 0) + (peerOk ? c.peerModes.length : 0)), 0);
let done = 0;

for (const c of SUITE) {
  const contestants: Contestant[] = [];
  if (engineOk) contestants.push({ key: 'engine', label: `engine (${storage})`, runs: [] });
  if (peerOk) for (const m of c.peerModes) contestants.push({ key: `pytorch ${m}`, label: `pytorch ${m}`, runs: [] });
  for (let r = 0; r < rounds; r++) {
    // Rotate the order each round so no contestant always runs first (or right after another).
    const order = contestants.map((_, i) => contestants[(i + r) % contestants.length]!);
    for (const k of order) {
      // Re-measure while other processes took a real share of the CPUs; keep the attempt that
      // had the least company (not simply the last one).
      let run: Run | { error: string } = { error: 'not run' };
      let best: Run | null = null;
      for (let attempt = 1; attempt <= retries + 1; attempt++) {
        const load = await waitQuiet();
        // Around decoding's runs the probe also reads memory: the bound rests on the best bandwidth seen.
        const before = await probe(c.work === 'decode');
        const { res, other } = k.key === 'engine'
          ? await measured(process.execPath, engineArgs(c), process.env)
          : await measured(opts.python!, peerArgs(c, k.key.slice('pytorch '.length) as PeerMode), peerEnv);
        run = toRun(res);
        if (!isRun(run)) break;
        const after = await probe(c.work === 'decode');
        const rts = [before.roundTripNs, after.roundTripNs].filter((x): x is number => x !== null);
        Object.assign(run, {
          other_load_cpus: load, other_during_cpus: other, probe_before: before.gflops, probe_after: after.gflops,
          round_trip_ns: rts.length ? Math.max(...rts) : null,
          read_gbs_around: before.readGbs !== undefined || after.readGbs !== undefined
            ? Math.max(before.readGbs ?? 0, after.readGbs ?? 0) : null,
        });
        if (!best || (run.other_during_cpus ?? 0) < (best.other_during_cpus ?? 0)) best = run;
        best.attempts = attempt;
        if (other === null || other <= CONTENDED_CPUS || attempt > retries) break;
        log(`  ${c.preset} ${c.work} ${shape(c)} ${k.label}: other processes used ${other.toFixed(2)} CPUs during the run ` +
          `(${run.tokens_per_s.toFixed(1)} tokens/s); measuring again (${attempt}/${retries}) ...`);
      }
      if (isRun(run) && best) run = best;
      k.runs.push(run);
      done++;
      log(`[${done}/${total}] ${c.preset} ${c.work} ${shape(c)} ${k.label} round ${r + 1}: ` +
        (isRun(run) ? `${run.tokens_per_s.toFixed(1)} tokens/s (median step ${run.step_ms_median.toFixed(1)} ms, ${run.wall_s.toFixed(1)} s` +
          `${run.probe_before !== null && run.probe_after !== null ? `; probe ${run.probe_before.toFixed(0)}/${run.probe_after.toFixed(0)} GFLOP/s` : ''}` +
          `${run.other_during_cpus !== null && run.other_during_cpus > 0.05 ? `; other load ${run.other_during_cpus.toFixed(2)} CPUs during the run` : ''})` : `FAILED ${run.error}`));
      if (k.key === 'engine' && isRun(run) && typeof run.extra.isa === 'string') versions.engine_isa = run.extra.isa;
      if (k.key === 'engine' && isRun(run) && (run.extra.prefetch === 'nta' || run.extra.prefetch === 'l2')) {
        versions.engine_decode_prefetch = describePrefetch(run.extra.prefetch);
      }
      // Batched decoding's GEMMs on AMX tiles (NativeInfo.decodeRowsOnAmx): said once in the versions line.
      if (k.key === 'engine' && isRun(run) && run.extra.rows_on_amx === true) versions.engine_decode_rows = 'AMX tiles';
      if (k.key === 'engine' && isRun(run) && run.extra.rows_on_packed_strips === true) versions.engine_decode_rows = 'the weights\' packed strips';
    }
  }
  results.push({ c, contestants });
}

// ------------------------------------------------------------------------------------ report

interface Row {
  id: string; preset: string; work: Work; batch: number; seq: number; contestant: string;
  /** decode only (else null): prompt tokens and new tokens per sequence, median prefill time. */
  prompt: number | null; new_tokens: number | null; prefill_ms_median: number | null;
  /** decode only: this row's tokens/s as a share of the weight-streaming bound (see Summary). */
  of_bw_bound: number | null;
  rounds_ok: number; errors: string[];
  tokens_per_s: number | null; tokens_per_s_rounds: number[]; step_ms_median: number | null;
  gflops: number | null; mfu_fp32: number | null; mfu_bf16: number | null;
  /** Lowest probe around this contestant's runs as a fraction of the FP32 reference: < ~0.8 means a noisy machine. */
  machine_speed_min: number | null;
  /** Highest average CPU use of other processes during this contestant's runs, in CPUs. */
  other_cpus_max: number | null;
  engine_over_this: number | null; engine_over_this_paired: number | null;
  /** Engine, train and forward: mean share of the timed steps whose kernels ran inline on one thread (JobThreading). */
  inline_share: number | null;
  /** Largest core-to-core round trip (ns) probed around this contestant's runs. */
  round_trip_ns_max: number | null;
}
/** The issue's targets for the row and this run's verdicts on them (lib/bench/targets.ts). */
interface Summary extends TargetVerdicts {
  id: string; engine_tokens_per_s: number | null; best_peer: string | null; best_peer_tokens_per_s: number | null;
  engine_over_best_peer: number | null; engine_over: Record<string, number | null>;
  /** Some run behind these ratios shared the CPUs with other processes (other > CONTENDED_CPUS). */
  contended: boolean;
  /**
   * decode only: bytes of weights one decode step reads at the engine's storage width
   * (lib/bench/decode-bytes.ts), the bandwidth used (the read-only stream's, what decoding does; the
   * triad's where the peak program did not measure it), the tokens/s that streaming the weights
   * once per step at that bandwidth allows (batch tokens per step), and the engine's share of it;
   * the same against the STREAM triad rate, for comparison with the usual figure.
   */
  weight_bytes_per_step: number | null; engine_weight_bytes: number | null; bandwidth_gbs: number | null;
  bandwidth_kind: 'read' | 'triad' | null;
  /**
   * decode only, where the engine read fewer bytes than its weights (weights coded in 12 bits,
   * Model.decodeReadBytes): the bytes its step read, the bound at those bytes and the engine's share
   * of it. The bound target's verdict then rests on this bound: it is the bandwidth the engine used.
   */
  engine_read_bytes_per_step: number | null; read_bound_tokens_per_s: number | null; engine_of_read_bound: number | null;
  /**
   * decode only: the engine's share of the bound at the read bandwidth probed just before and after
   * each of its runs (the larger of the two), median over rounds: the same moment's bandwidth, on a
   * VM whose bandwidth moves by the minute. The bound target's verdict rests on it where measured;
   * the bound at the run's best bandwidth (above) is the stricter figure.
   */
  engine_of_bound_around_runs: number | null; read_gbs_around_engine_runs: number[];
  bw_bound_tokens_per_s: number | null; engine_of_bw_bound: number | null;
  triad_gbs: number | null; triad_bound_tokens_per_s: number | null; engine_of_triad_bound: number | null;
  /**
   * decode only: what a step also reads, the KV cache (decodeKvCacheBytes, the engine's cache dtype, at
   * the decode's mean length), and the bound with it counted: the closer limit for batched decoding,
   * where the cache is a larger share of the bytes. ratio_target_of_weights_kv_bound: the ratio
   * target's tokens/s as a share of that bound (> 1: out of reach).
   */
  kv_bytes_per_step: number | null; kv_cache_dtype: 'bf16' | 'f32' | null;
  weights_kv_bound_tokens_per_s: number | null; engine_of_weights_kv_bound: number | null;
  ratio_target_of_weights_kv_bound: number | null;
  /**
   * train only: the compute bound (computeBoundTps: the step's FLOPs at the measured peaks, products
   * on bf16 weights at the BF16 peak, LoRA's f32 products at the FP32 one, nothing else timed), the
   * engine's share of it, and the ratio target's tokens/s as a share of it (> 1: out of reach).
   */
  compute_bound_tokens_per_s: number | null; engine_of_compute_bound: number | null;
  ratio_target_of_compute_bound: number | null;
}

const isContended = (r: Row | undefined) => (r?.other_cpus_max ?? 0) > CONTENDED_CPUS;

function speedMin(runs: Run[]): number | null {
  const ps = runs.flatMap((r) => [r.probe_before, r.probe_after]).filter((x): x is number => x !== null);
  return ps.length && PEAK_FP32 ? Math.min(...ps) / PEAK_FP32 : null;
}

/** Bandwidths from the peak program: the N-thread rate, or the 1-thread one if higher. */
const TRIAD_GBS = scaled('triad_gbs_nt', 'triad_gbs_1t', 1);
/**
 * Memory bandwidth for the decode bound: the read-only stream's rate, since decoding reads its
 * weights and writes nothing; the triad's if the peak program did not measure reads.
 */
const READ_GBS_START = scaled('read_gbs_nt', 'read_gbs_1t', 1);
/**
 * The best read bandwidth of the run: the peak program's at the start, or a higher one from the
 * probes around decoding's runs (this VM's bandwidth moved 39-77 GB/s within an hour; a bound on a
 * slow moment's figure would flatter the engine).
 */
const PROBE_READ_MAX = probeReadGbs.length ? Math.max(...probeReadGbs) : null;
const READ_GBS = READ_GBS_START !== null || PROBE_READ_MAX !== null ? Math.max(READ_GBS_START ?? 0, PROBE_READ_MAX ?? 0) : null;
const BANDWIDTH_KIND: 'read' | 'triad' | null = READ_GBS !== null ? 'read' : TRIAD_GBS !== null ? 'triad' : null;
const BANDWIDTH_GBS = READ_GBS ?? TRIAD_GBS;

const rows: Row[] = [];
const summaries: Summary[] = [];
for (const { c, contestants } of results) {
  // Decode: the engine's own count (runDecodeBench), forward FLOPs at seq = prompt + new / 2.
  const config = presetConfig(c.preset);
  const fpt = c.work === 'decode'
    ? flopsPerToken(config, c.prompt! + c.newTokens! / 2, 'forward', 0)
    : flopsPerToken(config, c.seq, c.work, c.work === 'train' ? loraRank : 0);  // adapters run in training rows only
  const weightBytes = c.work === 'decode' ? decodeWeightBytes(config, storage) : null;
  // Training: the step's FLOPs at the measured peaks (bf16 weights' products on the BF16 unit where
  // the CPU has one; LoRA's products, and everything on f32 weights, at the FP32 FMA peak).
  const computeBound = c.work === 'train'
    ? computeBoundTps(fpt, storage === 'bf16' && PEAK_BF16 ? loraFlopsPerToken(config, loraRank) : fpt,
      storage === 'bf16' && PEAK_BF16 ? PEAK_BF16 : PEAK_FP32, PEAK_FP32)
    : null;
  const boundAt = (gbs: number | null) => (weightBytes !== null && gbs ? streamingBound(c.batch, gbs, weightBytes) : null);
  const bwBound = boundAt(BANDWIDTH_GBS), triadBound = boundAt(TRIAD_GBS);
  const tpsMed = (k: Contestant) => { const ok = k.runs.filter(isRun).map((x) => x.tokens_per_s); return ok.length ? median(ok) : null; };
  const engine = contestants.find((k) => k.key === 'engine');
  const engTps = engine ? tpsMed(engine) : null;
  const engWeightBytes = engine?.runs.filter(isRun).map((x) => x.extra.weight_bytes).find((x): x is number => typeof x === 'number') ?? null;
  const engReadBytes = engine?.runs.filter(isRun).map((x) => x.extra.weight_bytes_read).find((x): x is number => typeof x === 'number') ?? null;
  // The step's bytes with the engine's coded copies in place of its weights (norms and the rest as counted).
  const readBytes = weightBytes !== null && engWeightBytes !== null && engReadBytes !== null && engReadBytes < engWeightBytes
    ? weightBytes - (engWeightBytes - engReadBytes) : null;
  const readBound = readBytes !== null && BANDWIDTH_GBS ? streamingBound(c.batch, BANDWIDTH_GBS, readBytes) : null;
  const engine_over: Record<string, number | null> = {};
  let best: { key: string; tps: number } | null = null;
  for (const k of contestants) {
    const ok = k.runs.filter(isRun);
    const tps = tpsMed(k);
    const gflops = tps === null ? null : (tps * fpt) / 1e9;
    const isPeer = k.key !== 'engine';
    // Paired ratio: engine and this peer in the same round, then the median over rounds.
    const paired: number[] = [];
    if (isPeer && engine) k.runs.forEach((p, i) => { const e = engine.runs[i]; if (e && isRun(e) && isRun(p)) paired.push(e.tokens_per_s / p.tokens_per_s); });
    const ratio = isPeer && engTps !== null && tps !== null ? engTps / tps : null;
    if (isPeer) {
      engine_over[k.key.slice('pytorch '.length)] = ratio;
      if (tps !== null && (!best || tps > best.tps)) best = { key: k.key, tps };
    }
    const prefill = ok.map((x) => x.extra.prefill_ms_median).filter((x): x is number => typeof x === 'number');
    rows.push({
      id: c.id, preset: c.preset, work: c.work, batch: c.batch, seq: c.seq, contestant: k.label,
      prompt: c.prompt ?? null, new_tokens: c.newTokens ?? null, prefill_ms_median: prefill.length ? median(prefill) : null,
      // The engine against the bound at the bytes it read (its coded weights), the peers at their weights'.
      of_bw_bound: ((b) => (b !== null && tps !== null ? tps / b : null))(k.key === 'engine' && readBound !== null ? readBound : bwBound),
      rounds_ok: ok.length, errors: k.runs.filter((x) => !isRun(x)).map((x) => (x as { error: string }).error),
      tokens_per_s: tps, tokens_per_s_rounds: ok.map((x) => x.tokens_per_s),
      step_ms_median: ok.length ? median(ok.map((x) => x.step_ms_median)) : null,
      gflops, mfu_fp32: gflops !== null && PEAK_FP32 ? gflops / PEAK_FP32 : null, mfu_bf16: gflops !== null && PEAK_BF16 ? gflops / PEAK_BF16 : null,
      engine_over_this: ratio, engine_over_this_paired: paired.length ? median(paired) : null,
      machine_speed_min: speedMin(ok),
      round_trip_ns_max: ok.some((x) => x.round_trip_ns !== null) ? Math.max(...ok.map((x) => x.round_trip_ns ?? 0)) : null,
      inline_share: ((xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null))(
        ok.map((x) => x.extra.inline_share).filter((x): x is number => typeof x === 'number')),
      other_cpus_max: ok.some((x) => x.other_during_cpus !== null) ? Math.max(...ok.map((x) => x.other_during_cpus ?? 0)) : null,
    });
  }
  const overBest = engTps !== null && best ? engTps / best.tps : null;
  const kvDtype = engine?.runs.filter(isRun).map((x) => x.extra.kv_cache).find((x): x is 'bf16' | 'f32' => x === 'bf16' || x === 'f32') ?? null;
  // Set only for decode rows (the engine's runs report their cache's dtype), with their weight bytes.
  const kvBytes = weightBytes !== null && kvDtype !== null ? decodeKvCacheBytes(config, c.batch, c.prompt!, c.newTokens!, kvDtype) : null;
  // The engine's share of the bound at the bandwidth probed around each of its runs.
  const engineRuns = engine?.runs.filter(isRun) ?? [];
  const aroundShares = weightBytes === null ? [] : engineRuns.filter((x) => x.read_gbs_around !== null)
    .map((x) => x.tokens_per_s / streamingBound(c.batch, x.read_gbs_around!, readBytes ?? weightBytes));
  const aroundShare = aroundShares.length ? median(aroundShares) : null;
  // Weights (as the engine read them) and cache.
  const kvBound = kvBytes !== null && BANDWIDTH_GBS ? streamingBound(c.batch, BANDWIDTH_GBS, (readBytes ?? weightBytes!) + kvBytes) : null;
  summaries.push({
    id: c.id, engine_tokens_per_s: engTps, best_peer: best?.key ?? null, best_peer_tokens_per_s: best?.tps ?? null,
    engine_over_best_peer: overBest, engine_over,
    contended: rows.some((r) => r.id === c.id && isContended(r)),
    ...targetVerdicts({ ratio: c.target, mfu: c.mfuTarget, bound: c.boundTarget },
      { engineTps: engTps, bestPeerTps: best?.tps ?? null, engineMfuBf16: engTps !== null && PEAK_BF16 ? (engTps * fpt) / 1e9 / PEAK_BF16 : null,
        // The bound at the bandwidth around the engine's runs where probed: tokens/s over that share.
        boundTps: aroundShare !== null && engTps !== null ? engTps / aroundShare : readBound ?? bwBound }),
    weight_bytes_per_step: weightBytes, engine_weight_bytes: engWeightBytes, bandwidth_gbs: weightBytes !== null ? BANDWIDTH_GBS : null,
    bandwidth_kind: weightBytes !== null ? BANDWIDTH_KIND : null,
    engine_read_bytes_per_step: readBytes, read_bound_tokens_per_s: readBound,
    engine_of_read_bound: readBound !== null && engTps !== null ? engTps / readBound : null,
    engine_of_bound_around_runs: aroundShare,
    read_gbs_around_engine_runs: engineRuns.map((x) => x.read_gbs_around).filter((x): x is number => x !== null),
    bw_bound_tokens_per_s: bwBound, engine_of_bw_bound: bwBound !== null && engTps !== null ? engTps / bwBound : null,
    triad_gbs: weightBytes !== null ? TRIAD_GBS : null, triad_bound_tokens_per_s: triadBound,
    engine_of_triad_bound: triadBound !== null && engTps !== null ? engTps / triadBound : null,
    kv_bytes_per_step: kvBytes, kv_cache_dtype: kvDtype, weights_kv_bound_tokens_per_s: kvBound,
    engine_of_weights_kv_bound: kvBound !== null && engTps !== null ? engTps / kvBound : null,
    ratio_target_of_weights_kv_bound: kvBound !== null && c.target !== undefined && best ? (c.target * best.tps) / kvBound : null,
    compute_bound_tokens_per_s: computeBound,
    engine_of_compute_bound: computeBound !== null && engTps !== null ? engTps / computeBound : null,
    ratio_target_of_compute_bound: computeBound !== null && c.target !== undefined && best ? (c.target * best.tps) / computeBound : null,
  });
}

const f = (x: number | null, d = 1) => (x === null || !Number.isFinite(x) ? '-' : x.toFixed(d));
const pct = (x: number | null) => (x === null ? '-' : `${(100 * x).toFixed(1)}%`);
const ratio = (x: number | null) => (x === null ? '' : `${x.toFixed(2)}x`);

const out: string[] = [];
out.push(`sealkit bench — ${started.toISOString()} — ${mach.model_name}, ${mach.cpus} CPUs, ${threads} threads, ${rounds} round(s)${opts.quick ? ' (quick)' : ''}`);
out.push(`versions: sealkit ${versions.sealkit}, node ${versions.node}, torch ${versions.torch ?? '-'}, engine isa ${versions.engine_isa ?? '-'}` +
  `${versions.engine_decode_prefetch ? `, decoding's weights prefetched ${versions.engine_decode_prefetch}` : ''}` +
  `${versions.engine_decode_rows ? `, batched decoding's rows on ${versions.engine_decode_rows}` : ''}`);
if (peaks) {
  const s = (k: string) => f(peakOf(k), 0);
  out.push(`peaks (best of trials): FP32 FMA ${s('fp32_fma_gflops_1t')} GFLOP/s 1T, ${s('fp32_fma_gflops_nt')} ${threads}T | ` +
    `BF16 dot ${peaks.avx512_bf16 ? `${s('bf16_dot_gflops_1t')} 1T, ${s('bf16_dot_gflops_nt')} ${threads}T` : 'n/a (no avx512_bf16)'} | ` +
    `${peaks.amx_bf16 ? `AMX bf16 ${s('amx_bf16_gflops_1t')} 1T, ${s('amx_bf16_gflops_nt')} ${threads}T | ` : ''}` +
    `triad ${f(peakOf('triad_gbs_1t'))} GB/s 1T, ${f(peakOf('triad_gbs_nt'))} ${threads}T | ` +
    `read-only stream ${f(peakOf('read_gbs_1t'))} GB/s 1T, ${f(peakOf('read_gbs_nt'))} ${threads}T` +
    (probeReadGbs.length ? ` (${probeReadGbs.length} probes around decoding's runs: ${f(Math.min(...probeReadGbs))}-${f(Math.max(...probeReadGbs))} ${threads}T)` : '') +
    (typeof peaks.core_round_trip_ns === 'number' ? ` | core-to-core round trip ${f(peaks.core_round_trip_ns, 0)} ns` : ''));
  out.push(`MFU references (${threads}T; max of the ${threads}-thread rate, ${threads} x the 1-thread rate and the probes): ` +
    `FP32 ${f(PEAK_FP32, 0)} GFLOP/s, ${PEAK_BF16_UNIT} ${f(PEAK_BF16, 0)} GFLOP/s`);
}
if (peerOk) {
  out.push(`peer env: ${Object.entries(peerEnvShown).filter(([, v]) => v !== null).map(([k, v]) => `${k}=${v}`).join(' ')}` +
    (peerMatmulGflops !== null ? ` | torch fp32 matmul 512x576x1536: ${f(peerMatmulGflops, 0)} GFLOP/s` +
      (PEAK_FP32 ? ` (${f((100 * peerMatmulGflops) / PEAK_FP32, 0)} % of the FP32 FMA peak)` : '') : ''));
}
for (const s of [...skipped, ...peerWarnings]) out.push(s);
out.push('');
const head = ['benchmark', 'contestant', 'tokens/s', 'range', 'step ms', 'GFLOP/s', 'MFU fp32', 'MFU bf16', 'bw bound', 'speed', 'rt ns', 'other', 'engine/x'];
const table: string[][] = [head];
for (const { c } of results) {
  let first = true;
  const engineRow = rows.find((x) => x.id === c.id && x.contestant.startsWith('engine'));
  for (const r of rows.filter((x) => x.id === c.id)) {
    const rs = r.tokens_per_s_rounds;
    table.push([
      first ? `${c.preset} ${c.work} ${shape(c)}` : '',
      r.contestant + (r.inline_share ? `, ${pct(r.inline_share)} inline` : '') + (r.errors.length ? ` (${r.errors.length} failed)` : ''),
      f(r.tokens_per_s), rs.length > 1 ? `${f(Math.min(...rs), 0)}-${f(Math.max(...rs), 0)}` : '', f(r.step_ms_median), f(r.gflops),
      pct(r.mfu_fp32), pct(r.mfu_bf16), c.work === 'decode' ? pct(r.of_bw_bound) : '', r.machine_speed_min === null ? '-' : `${(100 * r.machine_speed_min).toFixed(0)}%`,
      f(r.round_trip_ns_max, 0), f(r.other_cpus_max, 2),
      ratio(r.engine_over_this) + (r.engine_over_this !== null && (isContended(r) || isContended(engineRow)) ? '?' : ''),
    ]);
    first = false;
  }
  const s = summaries.find((x) => x.id === c.id);
  if (s?.engine_over_best_peer != null) {
    const verdicts = describeRatioTarget(s);
    const target = verdicts && peerWarnings.length ? `${verdicts} (peer untuned: see the warnings)` : verdicts;
    table.push(['', `engine / best peer (${s.best_peer})${target}`, '', '', '', '', '', '', '', '', '', '', ratio(s.engine_over_best_peer) + (s.contended ? '?' : '')]);
  }
  if (s?.compute_bound_tokens_per_s != null) {
    table.push(['', `compute bound (the step's FLOPs at the measured peaks)${s.engine_of_compute_bound === null ? '' : `: engine ${pct(s.engine_of_compute_bound)} of it`}`,
      f(s.compute_bound_tokens_per_s), '', '', '', '', '', '', '', '', '', '']);
    const asks = describeTargetOfComputeBound(s, s.best_peer_tokens_per_s, s.compute_bound_tokens_per_s, s.engine_tokens_per_s);
    if (asks) table.push(['', asks, '', '', '', '', '', '', '', '', '', '', '']);
  }
  if (s?.weight_bytes_per_step != null) {
    table.push(['', `weight-streaming bound (${storage}, ${s.bandwidth_kind === 'read' ? 'read-only stream' : 'triad'})`,
      f(s.bw_bound_tokens_per_s), '', '', '', '', '',
      s.engine_of_bw_bound === null ? '' : `engine ${pct(s.engine_of_bw_bound)}`, '', '', '', '']);
    if (s.read_bound_tokens_per_s !== null && s.engine_read_bytes_per_step !== null) {
      table.push(['', `bound at the bytes the engine reads (weights coded in 12 bits, ${f(s.engine_read_bytes_per_step / 1e6)} MB)`,
        f(s.read_bound_tokens_per_s), '', '', '', '', '', s.engine_of_read_bound === null ? '' : `engine ${pct(s.engine_of_read_bound)}`, '', '', '', '']);
    }
    if (s.engine_of_bound_around_runs !== null) {
      const gbs = s.read_gbs_around_engine_runs;
      table.push(['', `bound at the bandwidth probed around each engine run (${f(Math.min(...gbs))}-${f(Math.max(...gbs))} GB/s; median of rounds)`,
        '', '', '', '', '', '', `engine ${pct(s.engine_of_bound_around_runs)}`, '', '', '', '']);
    }
    const bound = describeBoundTarget(s);
    if (bound) table.push(['', bound, '', '', '', '', '', '', pct(s.engine_of_bound_around_runs ?? s.engine_of_read_bound ?? s.engine_of_bw_bound), '', '', '', '']);
    const beyond = describeTargetBeyondBound(s, s.best_peer_tokens_per_s);
    if (beyond) table.push(['', beyond, '', '', '', '', '', '', '', '', '', '', '']);
    if (s.weights_kv_bound_tokens_per_s !== null) {
      table.push(['', `weights${s.engine_read_bytes_per_step !== null ? ' (as read)' : ''} + KV cache bound (${s.kv_cache_dtype} cache)`, f(s.weights_kv_bound_tokens_per_s), '', '', '', '', '',
        s.engine_of_weights_kv_bound === null ? '' : `engine ${pct(s.engine_of_weights_kv_bound)}`, '', '', '', '']);
      if (s.ratio_target_of_weights_kv_bound !== null && s.target_met === false)
        table.push(['', `the ratio target is ${pct(s.ratio_target_of_weights_kv_bound)} of this bound`, '', '', '', '', '', '', '', '', '', '', '']);
    }
  }
}
const widths = head.map((_, i) => Math.max(...table.map((r) => (r[i] ?? '').length)));
for (const r of table) out.push(r.map((cell, i) => (i < 2 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ').trimEnd());
out.push('');
out.push('tokens/s: median over rounds of each run\'s median step; range: min-max of the rounds; engine/x > 1 means the engine is faster.');
out.push('decode (b<batch> <prompt>+<new>): greedy KV-cache generation (T<t> p<p>: sampled at temperature t, top-p p, the peer sorting the');
out.push('vocabulary as transformers does); tokens/s = batch x (new - 1) over the time from the first token to the');
out.push('last (prefill excluded; prefill_ms_median in the JSON); step ms = that time / (new - 1). bw bound: tokens/s over batch x bandwidth /');
out.push(`bytes of ${storage} weights read per step (every weight once, LM head included, KV cache not counted), at the read-only`);
out.push('stream bandwidth (what decoding does: it reads its weights and writes nothing); the same against the STREAM triad follows, and the');
out.push('bound with the KV cache\'s bytes counted too (each sequence\'s keys and values at the mean length, prompt + new / 2).');
out.push('Where the engine decodes from its weights coded in 12 bits (lossless: the same bits; Model.decodeReadBytes), its bw bound column,');
out.push('the bound target\'s verdict and the bound with the KV cache use the bytes it read; the bf16 line stays for comparison.');
out.push('Bandwidth: the best read stream of the run (the start\'s or a probe\'s around decoding\'s runs) for the bound lines; the verdict');
out.push('uses the bound at the bandwidth probed just before and after each engine run (the larger; median of the rounds\' shares).');
for (const s of summaries) {
  if (s.weight_bytes_per_step === null) continue;
  out.push(`  ${s.id}: ${f(s.weight_bytes_per_step / 1e6)} MB of weights per step / ${f(s.bandwidth_gbs)} GB/s (${s.bandwidth_kind}) -> ` +
    `bound ${f(s.bw_bound_tokens_per_s)} tokens/s; engine ${f(s.engine_tokens_per_s)} tokens/s = ${pct(s.engine_of_bw_bound)} of it` +
    (s.bandwidth_kind === 'read' && s.triad_bound_tokens_per_s !== null
      ? `; triad ${f(s.triad_gbs)} GB/s -> ${f(s.triad_bound_tokens_per_s)} tokens/s, engine ${pct(s.engine_of_triad_bound)}`
      : '') +
    (s.engine_read_bytes_per_step !== null
      ? `; the engine read ${f(s.engine_read_bytes_per_step / 1e6)} MB per step (weights coded in 12 bits, lossless) -> ${f(s.read_bound_tokens_per_s)} tokens/s, engine ${pct(s.engine_of_read_bound)}`
      : '') +
    (s.kv_bytes_per_step !== null
      ? `; with ${f(s.kv_bytes_per_step / 1e6)} MB of ${s.kv_cache_dtype} KV cache (mean length) -> ${f(s.weights_kv_bound_tokens_per_s)} tokens/s, engine ${pct(s.engine_of_weights_kv_bound)}`
      : ''));
}
out.push('rt ns: the largest core-to-core cache-line round trip probed around the runs (bench/peak.c); on the 2-vCPU EPYC VM ~190 while its vCPUs shared a cache, 450 and more while the host kept them apart, when small steps run faster on one thread');
out.push('N% inline: the share of the engine\'s timed steps whose kernels ran on one thread, which it measured faster for steps that small (Model.jobThreading)');
out.push('speed: lowest FP32 FMA probe taken around the runs, as a share of the best seen; other: most CPUs other processes used during a run');
out.push(`(runs with other > ${CONTENDED_CPUS} are re-measured up to --retries times). Low speed or high other: distrust the row;`);
out.push('a ratio marked ? rests on a contended run: PyTorch slows down far more than the engine when it shares the CPUs.');
out.push(`LoRA (training rows): r ${loraRank}, alpha ${loraAlpha} on all seven projections, engine and peer${loraRank === 16 ? '' : ' (the issue\'s targets are stated at r 16)'}.`);
out.push('GFLOP/s uses the engine\'s FLOP count (lib/bench/engine-bench.ts flopsPerToken) for every contestant; MFU is against the measured peaks above.');
out.push('compute bound (train): tokens/s if every product of the step ran at its instruction\'s peak above and nothing else took time');
out.push(`(${storage === 'bf16' && PEAK_BF16 ? `products on the bf16 weights and attention's at ${f(PEAK_BF16, 0)} GFLOP/s, LoRA's f32 products at ${f(PEAK_FP32, 0)}` : `every product at the FP32 FMA peak, ${f(PEAK_FP32, 0)} GFLOP/s`}):`);
out.push('no engine can pass it on this machine; where a ratio target was missed, the line under it says how much of the bound it asks for.');
process.stdout.write(`${out.join('\n')}\n`);

if (opts.json) {
  const report = {
    suite: 'sealkit-bench', date: started.toISOString(), duration_s: (Date.now() - started.getTime()) / 1000, quick: opts.quick,
    threads, rounds, engine_storage: storage, lora: { rank: loraRank, alpha: loraAlpha }, machine: mach, versions, peer_env: peerOk ? peerEnvShown : null, peer_fp32_matmul_gflops: peerMatmulGflops, peer_warnings: peerWarnings, peaks,
    mfu_reference_gflops: { fp32: PEAK_FP32, bf16: PEAK_BF16, bf16_unit: PEAK_BF16_UNIT }, waited_for_quiet_s: waitedS, skipped,
    read_gbs_probes: probeReadGbs, read_gbs_used: READ_GBS,
    rows, summary: summaries,
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}
