// sealkit benchmark suite: the engine against a tuned PyTorch peer on the same model shapes, with
// this machine's measured FP32/BF16 compute peaks and memory bandwidth for MFU figures.
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
import { flopsPerToken } from '../lib/bench/engine-bench.js';
import { presetConfig, presetRawConfig } from '../lib/model/presets.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TCMALLOC = '/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4';
const OPENBLAS_OMP = '/usr/lib/x86_64-linux-gnu/openblas-openmp';
const LORA_RANK = 16;
/** Other processes' average CPU use above which a run counts as contended (and is re-measured). */
const CONTENDED_CPUS = 0.3;

type Work = 'train' | 'forward';
type PeerMode = 'fp32' | 'bf16-autocast' | 'bf16-weights';

interface Case {
  id: string;
  preset: string;
  work: Work;
  batch: number;
  seq: number;
  warmup: number;
  repeats: number;
  peerModes: PeerMode[];
}

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
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (opts.help) {
  process.stdout.write(`usage: npm run bench -- [--quick] [--threads N] [--json] [--rounds R] [--storage bf16|f32]
                        [--python PATH] [--max-wait S] [--retries K] [--only IDS] [--no-peer] [--no-engine]
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
  --only IDS   run only these benchmarks (comma-separated: smollm2-train, smollm2-forward,
               tiny-train, tiny-forward)
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

function fail(msg: string): never {
  process.stderr.write(`bench: ${msg}\n`);
  process.exit(2);
}

const ALL_PEER: PeerMode[] = ['fp32', 'bf16-autocast', 'bf16-weights'];
const SUITE: Case[] = opts.quick
  ? [
      { id: 'smollm2-train', preset: 'smollm2-135m', work: 'train', batch: 1, seq: 64, warmup: 1, repeats: 2, peerModes: ['fp32', 'bf16-autocast'] },
      { id: 'smollm2-forward', preset: 'smollm2-135m', work: 'forward', batch: 1, seq: 64, warmup: 1, repeats: 3, peerModes: ALL_PEER },
      { id: 'tiny-train', preset: 'tiny', work: 'train', batch: 4, seq: 64, warmup: 2, repeats: 5, peerModes: ['fp32', 'bf16-autocast'] },
    ]
  : [
      // SmolLM2 LoRA steps take seconds each: 1 warm-up + 3 timed steps per process.
      { id: 'smollm2-train', preset: 'smollm2-135m', work: 'train', batch: 4, seq: 256, warmup: 1, repeats: 3, peerModes: ALL_PEER },
      { id: 'smollm2-forward', preset: 'smollm2-135m', work: 'forward', batch: 4, seq: 256, warmup: 1, repeats: 5, peerModes: ALL_PEER },
      { id: 'tiny-train', preset: 'tiny', work: 'train', batch: 4, seq: 256, warmup: 3, repeats: 10, peerModes: ['fp32', 'bf16-autocast'] },
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

function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

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
  return { other_load_cpus: null, other_during_cpus: null, attempts: 1, probe_before: null, probe_after: null, tokens_per_s, step_ms_median, step_ms_all: Array.isArray(step_ms_all) ? (step_ms_all as number[]) : [], wall_s: r.wall_s, extra };
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
log(`sealkit bench${opts.quick ? ' --quick' : ''}: ${threads} threads, ${rounds} round(s), ${mach.model_name} (${mach.cpus} CPUs)`);

// Peaks: build bench/peak.c for this machine and run it once, before the suite.
type Stat = { best: number; median: number; trials: number };
let peaks: Record<string, unknown> | null = null;
const peakExe = join(tmp, 'peak');
let peakBuilt = false;
{
  const exe = peakExe;
  const cc = spawnSync('cc', ['-O2', '-march=native', '-pthread', join(ROOT, 'bench', 'peak.c'), '-o', exe], { encoding: 'utf8' });
  versions.cc = spawnSync('cc', ['--version'], { encoding: 'utf8' }).stdout?.split('\n')[0] ?? null;
  if (cc.status !== 0) {
    skipped.push(`peaks skipped: cc failed (${(cc.stderr ?? String(cc.error)).trim().split('\n')[0]})`);
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
const scaled = (nt: string, one: string): number | null => {
  const a = peakOf(nt), b = peakOf(one);
  return a === null && b === null ? null : Math.max(a ?? 0, (b ?? 0) * threads);
};
let PEAK_FP32 = scaled('fp32_fma_gflops_nt', 'fp32_fma_gflops_1t');
const PEAK_BF16 = scaled('bf16_dot_gflops_nt', 'bf16_dot_gflops_1t');

/** Median FP32 FMA GFLOP/s over a ~0.1 s probe on all threads: how fast the machine is right now. */
async function probe(): Promise<number | null> {
  if (!peakBuilt) return null;
  const r = await runChild(peakExe, ['--probe', '--threads', String(threads)], process.env, 30_000);
  const j = r.code === 0 ? lastJson(r.stdout) : null;
  const s = j?.fp32_fma_gflops_nt as Stat | undefined;
  if (!s) return null;
  if (PEAK_FP32 === null || s.best > PEAK_FP32) PEAK_FP32 = s.best;
  return s.median;
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

let peerOk = !opts['no-peer'];
if (opts['no-peer']) skipped.push('peer skipped: --no-peer');
else {
  const r = await runChild(opts.python!, ['-c', 'import torch; print(torch.__version__)'], peerEnv, 120_000);
  if (r.code === 0) versions.torch = r.stdout.trim().split('\n').at(-1) ?? null;
  else {
    peerOk = false;
    const plain = await runChild(opts.python!, ['-c', 'import torch'], process.env, 120_000);
    skipped.push(plain.code === 0
      ? `peer skipped: torch imports but not in the tuned environment (${whyFailed(r)})`
      : `peer skipped: python3-torch not installed (${opts.python} -c "import torch" failed)`);
  }
}
for (const s of skipped) log(s);

const configPath = (preset: string): string => {
  const p = join(tmp, `${preset}.json`);
  if (!existsSync(p)) writeFileSync(p, JSON.stringify(presetRawConfig(preset)));
  return p;
};

// ------------------------------------------------------------------------------------ suite

function engineArgs(c: Case): string[] {
  return [join(ROOT, 'bin', 'seal.js'), 'bench', c.work, '--preset', c.preset, '--batch', String(c.batch), '--seq', String(c.seq),
    '--threads', String(threads), '--repeats', String(c.repeats), '--warmup', String(c.warmup), '--storage', storage!, '--json'];
}

function peerArgs(c: Case, mode: PeerMode): string[] {
  return [join(ROOT, 'bench', 'peer_torch.py'), '--config', configPath(c.preset), '--name', c.preset, '--work', c.work, '--dtype', mode,
    '--batch', String(c.batch), '--seq', String(c.seq), '--threads', String(threads), '--repeats', String(c.repeats),
    '--warmup', String(c.warmup), '--rank', String(LORA_RANK), '--quiet'];
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
        const before = await probe();
        const { res, other } = k.key === 'engine'
          ? await measured(process.execPath, engineArgs(c), process.env)
          : await measured(opts.python!, peerArgs(c, k.key.slice('pytorch '.length) as PeerMode), peerEnv);
        run = toRun(res);
        if (!isRun(run)) break;
        Object.assign(run, { other_load_cpus: load, other_during_cpus: other, probe_before: before, probe_after: await probe() });
        if (!best || (run.other_during_cpus ?? 0) < (best.other_during_cpus ?? 0)) best = run;
        best.attempts = attempt;
        if (other === null || other <= CONTENDED_CPUS || attempt > retries) break;
        log(`  ${c.preset} ${c.work} ${k.label}: other processes used ${other.toFixed(2)} CPUs during the run ` +
          `(${run.tokens_per_s.toFixed(1)} tokens/s); measuring again (${attempt}/${retries}) ...`);
      }
      if (isRun(run) && best) run = best;
      k.runs.push(run);
      done++;
      log(`[${done}/${total}] ${c.preset} ${c.work} ${c.batch}x${c.seq} ${k.label} round ${r + 1}: ` +
        (isRun(run) ? `${run.tokens_per_s.toFixed(1)} tokens/s (median step ${run.step_ms_median.toFixed(1)} ms, ${run.wall_s.toFixed(1)} s` +
          `${run.probe_before !== null && run.probe_after !== null ? `; probe ${run.probe_before.toFixed(0)}/${run.probe_after.toFixed(0)} GFLOP/s` : ''}` +
          `${run.other_during_cpus !== null && run.other_during_cpus > 0.05 ? `; other load ${run.other_during_cpus.toFixed(2)} CPUs during the run` : ''})` : `FAILED ${run.error}`));
      if (k.key === 'engine' && isRun(run) && typeof run.extra.isa === 'string') versions.engine_isa = run.extra.isa;
    }
  }
  results.push({ c, contestants });
}

// ------------------------------------------------------------------------------------ report

interface Row {
  id: string; preset: string; work: Work; batch: number; seq: number; contestant: string;
  rounds_ok: number; errors: string[];
  tokens_per_s: number | null; tokens_per_s_rounds: number[]; step_ms_median: number | null;
  gflops: number | null; mfu_fp32: number | null; mfu_bf16: number | null;
  /** Lowest probe around this contestant's runs as a fraction of the FP32 reference: < ~0.8 means a noisy machine. */
  machine_speed_min: number | null;
  /** Highest average CPU use of other processes during this contestant's runs, in CPUs. */
  other_cpus_max: number | null;
  engine_over_this: number | null; engine_over_this_paired: number | null;
}
interface Summary {
  id: string; engine_tokens_per_s: number | null; best_peer: string | null; best_peer_tokens_per_s: number | null;
  engine_over_best_peer: number | null; engine_over: Record<string, number | null>;
  /** Some run behind these ratios shared the CPUs with other processes (other > CONTENDED_CPUS). */
  contended: boolean;
}

const isContended = (r: Row | undefined) => (r?.other_cpus_max ?? 0) > CONTENDED_CPUS;

function speedMin(runs: Run[]): number | null {
  const ps = runs.flatMap((r) => [r.probe_before, r.probe_after]).filter((x): x is number => x !== null);
  return ps.length && PEAK_FP32 ? Math.min(...ps) / PEAK_FP32 : null;
}

const rows: Row[] = [];
const summaries: Summary[] = [];
for (const { c, contestants } of results) {
  const fpt = flopsPerToken(presetConfig(c.preset), c.seq, c.work, LORA_RANK);
  const tpsMed = (k: Contestant) => { const ok = k.runs.filter(isRun).map((x) => x.tokens_per_s); return ok.length ? median(ok) : null; };
  const engine = contestants.find((k) => k.key === 'engine');
  const engTps = engine ? tpsMed(engine) : null;
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
    rows.push({
      id: c.id, preset: c.preset, work: c.work, batch: c.batch, seq: c.seq, contestant: k.label,
      rounds_ok: ok.length, errors: k.runs.filter((x) => !isRun(x)).map((x) => (x as { error: string }).error),
      tokens_per_s: tps, tokens_per_s_rounds: ok.map((x) => x.tokens_per_s),
      step_ms_median: ok.length ? median(ok.map((x) => x.step_ms_median)) : null,
      gflops, mfu_fp32: gflops !== null && PEAK_FP32 ? gflops / PEAK_FP32 : null, mfu_bf16: gflops !== null && PEAK_BF16 ? gflops / PEAK_BF16 : null,
      engine_over_this: ratio, engine_over_this_paired: paired.length ? median(paired) : null,
      machine_speed_min: speedMin(ok),
      other_cpus_max: ok.some((x) => x.other_during_cpus !== null) ? Math.max(...ok.map((x) => x.other_during_cpus ?? 0)) : null,
    });
  }
  summaries.push({
    id: c.id, engine_tokens_per_s: engTps, best_peer: best?.key ?? null, best_peer_tokens_per_s: best?.tps ?? null,
    engine_over_best_peer: engTps !== null && best ? engTps / best.tps : null, engine_over,
    contended: rows.some((r) => r.id === c.id && isContended(r)),
  });
}

const f = (x: number | null, d = 1) => (x === null || !Number.isFinite(x) ? '-' : x.toFixed(d));
const pct = (x: number | null) => (x === null ? '-' : `${(100 * x).toFixed(1)}%`);
const ratio = (x: number | null) => (x === null ? '' : `${x.toFixed(2)}x`);

const out: string[] = [];
out.push(`sealkit bench — ${started.toISOString()} — ${mach.model_name}, ${mach.cpus} CPUs, ${threads} threads, ${rounds} round(s)${opts.quick ? ' (quick)' : ''}`);
out.push(`versions: sealkit ${versions.sealkit}, node ${versions.node}, torch ${versions.torch ?? '-'}, engine isa ${versions.engine_isa ?? '-'}`);
if (peaks) {
  const s = (k: string) => f(peakOf(k), 0);
  out.push(`peaks (best of trials): FP32 FMA ${s('fp32_fma_gflops_1t')} GFLOP/s 1T, ${s('fp32_fma_gflops_nt')} ${threads}T | ` +
    `BF16 dot ${peaks.avx512_bf16 ? `${s('bf16_dot_gflops_1t')} 1T, ${s('bf16_dot_gflops_nt')} ${threads}T` : 'n/a (no avx512_bf16)'} | ` +
    `${peaks.amx_bf16 ? `AMX bf16 ${s('amx_bf16_gflops_1t')} 1T, ${s('amx_bf16_gflops_nt')} ${threads}T | ` : ''}` +
    `triad ${f(peakOf('triad_gbs_1t'))} GB/s 1T, ${f(peakOf('triad_gbs_nt'))} ${threads}T`);
  out.push(`MFU references (${threads}T; max of the ${threads}-thread rate, ${threads} x the 1-thread rate and the probes): ` +
    `FP32 ${f(PEAK_FP32, 0)} GFLOP/s, BF16 dot ${f(PEAK_BF16, 0)} GFLOP/s`);
}
if (peerOk) out.push(`peer env: ${Object.entries(peerEnvShown).filter(([, v]) => v !== null).map(([k, v]) => `${k}=${v}`).join(' ')}`);
for (const s of skipped) out.push(s);
out.push('');
const head = ['benchmark', 'contestant', 'tokens/s', 'range', 'step ms', 'GFLOP/s', 'MFU fp32', 'MFU bf16', 'speed', 'other', 'engine/x'];
const table: string[][] = [head];
for (const { c } of results) {
  let first = true;
  const engineRow = rows.find((x) => x.id === c.id && x.contestant.startsWith('engine'));
  for (const r of rows.filter((x) => x.id === c.id)) {
    const rs = r.tokens_per_s_rounds;
    table.push([
      first ? `${c.preset} ${c.work} ${c.batch}x${c.seq}` : '', r.contestant + (r.errors.length ? ` (${r.errors.length} failed)` : ''),
      f(r.tokens_per_s), rs.length > 1 ? `${f(Math.min(...rs), 0)}-${f(Math.max(...rs), 0)}` : '', f(r.step_ms_median), f(r.gflops),
      pct(r.mfu_fp32), pct(r.mfu_bf16), r.machine_speed_min === null ? '-' : `${(100 * r.machine_speed_min).toFixed(0)}%`,
      f(r.other_cpus_max, 2),
      ratio(r.engine_over_this) + (r.engine_over_this !== null && (isContended(r) || isContended(engineRow)) ? '?' : ''),
    ]);
    first = false;
  }
  const s = summaries.find((x) => x.id === c.id);
  if (s?.engine_over_best_peer != null) table.push(['', `engine / best peer (${s.best_peer})`, '', '', '', '', '', '', '', '', ratio(s.engine_over_best_peer) + (s.contended ? '?' : '')]);
}
const widths = head.map((_, i) => Math.max(...table.map((r) => (r[i] ?? '').length)));
for (const r of table) out.push(r.map((cell, i) => (i < 2 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ').trimEnd());
out.push('');
out.push('tokens/s: median over rounds of each run\'s median step; range: min-max of the rounds; engine/x > 1 means the engine is faster.');
out.push('speed: lowest FP32 FMA probe taken around the runs, as a share of the best seen; other: most CPUs other processes used during a run');
out.push(`(runs with other > ${CONTENDED_CPUS} are re-measured up to --retries times). Low speed or high other: distrust the row;`);
out.push('a ratio marked ? rests on a contended run: PyTorch slows down far more than the engine when it shares the CPUs.');
out.push('GFLOP/s uses the engine\'s FLOP count (lib/bench/engine-bench.ts flopsPerToken) for every contestant; MFU is against the measured peaks above.');
process.stdout.write(`${out.join('\n')}\n`);

if (opts.json) {
  const report = {
    suite: 'sealkit-bench', date: started.toISOString(), duration_s: (Date.now() - started.getTime()) / 1000, quick: opts.quick,
    threads, rounds, engine_storage: storage, machine: mach, versions, peer_env: peerOk ? peerEnvShown : null, peaks,
    mfu_reference_gflops: { fp32: PEAK_FP32, bf16: PEAK_BF16 }, waited_for_quiet_s: waitedS, skipped,
    rows, summary: summaries,
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}
