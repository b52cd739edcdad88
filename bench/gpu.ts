// GPU benchmark: sealkit's CUDA backend against HF transformers + PEFT on the same shapes, in the
// same run, on the llama-3.2-1b configuration with random bf16 weights.
//
//   SEALKIT_NATIVE_PATH=$PWD/build-cuda/Release/sealkit.node node --import tsx bench/gpu.ts \
//     [--rounds 2] [--out DIR] [--python python3] [--deadline SECONDS] [--quick]
//
// Each round runs the engine (`node bin/seal.js bench train|decode ... --device cuda --json`) and
// the peer (`python3 bench/peer_hf_gpu.py`), alternating which goes first. Reported figures are
// medians over rounds. MFU = tokens/s x flopsPerToken (lib/bench/engine-bench.ts, the same count
// for both) / the GPU's dense bf16 peak, picked from the nvidia-smi name. The decode bound at
// batch 1 is memory bandwidth / bytes of bf16 weights streamed per token (every projection + LM head).
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { flopsPerToken } from '../lib/bench/engine-bench.js';
import { presetConfig, presetRawConfig } from '../lib/model/presets.js';
import { median } from '../lib/bench/median.js';
import { gpuDatasheet } from '../lib/bench/peak-reference.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PRESET = 'llama-3.2-1b';
const RANK = 16;

const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '2' }, out: { type: 'string' }, python: { type: 'string', default: 'python3' },
    deadline: { type: 'string', default: '0' }, quick: { type: 'boolean' },
    batch: { type: 'string', default: '8' }, seq: { type: 'string', default: '512' },
    prompt: { type: 'string', default: '128' }, new: { type: 'string', default: '128' },
  },
});
const rounds = Number(args.rounds);
const batch = Number(args.batch);
const seq = Number(args.seq);
const prompt = Number(args.prompt);
const newTokens = Number(args.new);
const genBatches = [1, 32];
const trainWarm = args.quick ? 1 : 2;
const trainReps = args.quick ? 2 : 4;
const decWarm = 1;
const decReps = args.quick ? 2 : 3;
const outDir = args.out ?? mkdtempSync(join(os.tmpdir(), 'sealkit-gpu-'));
mkdirSync(outDir, { recursive: true });
const t0 = Date.now();
const deadlineMs = Number(args.deadline) * 1000;
const left = () => (deadlineMs > 0 ? deadlineMs - (Date.now() - t0) : Infinity);
const log = (s: string) => process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${s}\n`);

/** The median of the finite values (failed timings come back as NaN). */
function finiteMedian(xs: number[]): number {
  return median(xs.filter((x) => Number.isFinite(x)));
}

interface RunOut { cmd: string; ok: boolean; wall_s: number; json?: any; error?: string }
function run(cmd: string, argv: string[], timeoutS: number): RunOut {
  const line = [cmd, ...argv].join(' ');
  const budget = Math.min(timeoutS, Math.floor(left() / 1000));
  if (budget < 10) return { cmd: line, ok: false, wall_s: 0, error: 'skipped: deadline' };
  log(`$ ${line}`);
  const s = Date.now();
  const r = spawnSync(cmd, argv, { cwd: ROOT, encoding: 'utf8', timeout: budget * 1000, maxBuffer: 64 << 20, env: process.env });
  const wall = (Date.now() - s) / 1000;
  const lines = (r.stdout ?? '').trim().split('\n');
  const last = lines[lines.length - 1] ?? '';
  if (r.stderr) process.stderr.write(r.stderr.split('\n').filter((l) => l.trim()).slice(-12).map((l) => `    ${l}\n`).join(''));
  if (r.status !== 0 || !last.startsWith('{')) {
    const why = r.error ? String(r.error) : `exit ${r.status}${r.signal ? ` (${r.signal})` : ''}`;
    return { cmd: line, ok: false, wall_s: wall, error: `${why}: ${(r.stderr ?? '').slice(-1500)}` };
  }
  return { cmd: line, ok: true, wall_s: wall, json: JSON.parse(last) };
}

// ---------------------------------------------------------------- the GPU and its peaks
const smi = spawnSync('nvidia-smi', ['--query-gpu=name,memory.total,clocks.max.sm,driver_version', '--format=csv,noheader'], { encoding: 'utf8' });
const gpuLine = (smi.stdout ?? '').trim().split('\n')[0] ?? 'unknown';
const gpuName = gpuLine.split(',')[0]?.trim() ?? 'unknown';
const peak = gpuDatasheet(gpuName) ?? { bf16_tflops: NaN, hbm_tbs: NaN, basis: `unknown GPU '${gpuName}': no peak assumed` };
log(`GPU: ${gpuLine} -> ${peak.basis}`);

const info = run(process.execPath, ['bin/seal.js', 'info', '--json'], 60);
const cfgPath = join(outDir, `${PRESET}.config.json`);
writeFileSync(cfgPath, JSON.stringify(presetRawConfig(PRESET)));
const config = presetConfig(PRESET);
const trainFlops = flopsPerToken(config, seq, 'train', RANK);

// ---------------------------------------------------------------- the rounds
const seal = (a: string[]) => ['bin/seal.js', 'bench', ...a, '--preset', PRESET, '--device', 'cuda', '--storage', 'bf16', '--json'];
const engineRuns: { round: number; train?: RunOut; decode: Record<string, RunOut> }[] = [];
const peerRuns: { round: number; out: RunOut }[] = [];
const save = () => writeFileSync(join(outDir, 'gpu-bench-raw.json'), JSON.stringify({ gpu: gpuLine, peak, info: info.json ?? info.error, engineRuns, peerRuns }, null, 1));

function engineRound(round: number) {
  const e: (typeof engineRuns)[number] = { round, decode: {} };
  engineRuns.push(e);
  e.train = run(process.execPath, seal(['train', '--batch', String(batch), '--seq', String(seq), '--warmup', String(trainWarm), '--repeats', String(trainReps)]), 240);
  if (e.train.ok) log(`engine train: ${e.train.json.tokens_per_s.toFixed(0)} tokens/s (step ${e.train.json.step_ms_median.toFixed(1)} ms)`);
  else log(`engine train FAILED: ${e.train.error?.slice(0, 400)}`);
  save();
  for (const b of genBatches) {
    const r = run(process.execPath, seal(['decode', '--gen-batch', String(b), '--prompt', String(prompt), '--new', String(newTokens), '--warmup', String(decWarm), '--repeats', String(decReps)]), 180);
    e.decode[`b${b}`] = r;
    if (r.ok) log(`engine decode b${b}: ${r.json.tokens_per_s.toFixed(1)} tokens/s (prefill ${r.json.prefill_ms_median.toFixed(1)} ms)`);
    else log(`engine decode b${b} FAILED: ${r.error?.slice(0, 400)}`);
    save();
  }
}
function peerRound(round: number) {
  const out = run(args.python ?? 'python3', ['bench/peer_hf_gpu.py', '--config', cfgPath, '--batch', String(batch), '--seq', String(seq),
    '--prompt', String(prompt), '--new', String(newTokens), '--gen-batches', genBatches.join(','),
    '--warmup', String(trainWarm), '--repeats', String(trainReps), '--decode-warmup', String(decWarm), '--decode-repeats', String(decReps),
    ...(round > 1 ? ['--lora-decode', '0'] : [])], 400);
  peerRuns.push({ round, out });
  if (!out.ok) log(`peer FAILED: ${out.error?.slice(0, 600)}`);
  save();
}
for (let r = 1; r <= rounds; r++) {
  if (r % 2) { engineRound(r); peerRound(r); } else { peerRound(r); engineRound(r); }
}

// ---------------------------------------------------------------- summary
const eTrain = finiteMedian(engineRuns.map((e) => e.train?.ok ? e.train.json.tokens_per_s : NaN));
const eDec = (b: number) => finiteMedian(engineRuns.map((e) => e.decode[`b${b}`]?.ok ? e.decode[`b${b}`]!.json.tokens_per_s : NaN));
const ePre = (b: number) => finiteMedian(engineRuns.map((e) => e.decode[`b${b}`]?.ok ? e.decode[`b${b}`]!.json.prefill_ms_median : NaN));
const weightBytes = engineRuns.flatMap((e) => Object.values(e.decode)).find((r) => r.ok)?.json.weight_bytes
  ?? (() => { const c = config; const dq = c.numHeads * c.headDim; const dkv = c.numKvHeads * c.headDim;
    return 2 * (c.numLayers * (c.hiddenSize * (dq + 2 * dkv) + dq * c.hiddenSize + 3 * c.hiddenSize * c.intermediateSize) + c.vocabSize * c.hiddenSize); })();
const okPeers = peerRuns.filter((p) => p.out.ok).map((p) => p.out.json);
const peerModes = [...new Set(okPeers.flatMap((p) => Object.keys(p.train ?? {})))];
const pTrainMode = Object.fromEntries(peerModes.map((m) => [m, finiteMedian(okPeers.map((p) => p.train?.[m]?.tokens_per_s ?? NaN))]));
const bestMode = peerModes.sort((a, b) => (pTrainMode[b] ?? 0) - (pTrainMode[a] ?? 0))[0];
const pTrain = bestMode ? pTrainMode[bestMode]! : NaN;
const pDec = (l: string) => finiteMedian(okPeers.map((p) => p.decode?.[l]?.tokens_per_s ?? NaN));
const pPre = (l: string) => finiteMedian(okPeers.map((p) => p.decode?.[l]?.prefill_ms_median ?? NaN));
const mfu = (tps: number) => (tps * trainFlops) / (peak.bf16_tflops * 1e12);
const bound1 = (peak.hbm_tbs * 1e12) / weightBytes;

const f = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '—');
const pct = (x: number) => (Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : '—');
const rows: string[][] = [
  ['work', 'sealkit (cuda)', 'HF+PEFT', 'sealkit / HF', 'sealkit MFU / % of bw bound', 'HF MFU / % of bw bound'],
  [`LoRA SFT tokens/s (8x512, r16, 7 proj; HF: ${bestMode ?? '—'})`, f(eTrain), f(pTrain), f(eTrain / pTrain, 2), pct(mfu(eTrain)), pct(mfu(pTrain))],
  ...peerModes.filter((m) => m !== bestMode).map((m) => [`  HF+PEFT train, mode ${m}`, '', f(pTrainMode[m]!), f(eTrain / pTrainMode[m]!, 2), '', pct(mfu(pTrainMode[m]!))]),
  ['decode tokens/s, batch 1 (128+128, greedy)', f(eDec(1), 1), f(pDec('b1'), 1), f(eDec(1) / pDec('b1'), 2), pct(eDec(1) / bound1), pct(pDec('b1') / bound1)],
  ['  HF+PEFT decode batch 1 with LoRA attached', '', f(pDec('b1+lora'), 1), f(eDec(1) / pDec('b1+lora'), 2), '', pct(pDec('b1+lora') / bound1)],
  ['decode tokens/s, batch 32', f(eDec(32), 0), f(pDec('b32'), 0), f(eDec(32) / pDec('b32'), 2), '', ''],
  ['prefill ms, batch 1 x 128', f(ePre(1), 1), f(pPre('b1'), 1), '', '', ''],
  ['prefill ms, batch 32 x 128', f(ePre(32), 1), f(pPre('b32'), 1), '', '', ''],
];
const table = [
  `| ${rows[0]!.join(' | ')} |`, `|${rows[0]!.map(() => '---').join('|')}|`, ...rows.slice(1).map((r) => `| ${r.join(' | ')} |`),
].join('\n');
const summary = {
  date: new Date().toISOString(), gpu: gpuLine, gpu_name: gpuName, peak, preset: PRESET, rounds,
  seal_info_gpus: info.json?.gpus ?? info.error,
  peer_versions: okPeers[0] ? { torch: okPeers[0].torch, transformers: okPeers[0].transformers, peft: okPeers[0].peft, cuda: okPeers[0].cuda } : null,
  train_flops_per_token: trainFlops, weight_bytes: weightBytes, decode_b1_bound_tokens_per_s: bound1,
  engine: { train_tokens_per_s: eTrain, train_mfu: mfu(eTrain), decode_b1_tokens_per_s: eDec(1), decode_b32_tokens_per_s: eDec(32), decode_b1_of_bound: eDec(1) / bound1, prefill_ms_b1: ePre(1), prefill_ms_b32: ePre(32) },
  peer: { train_best_mode: bestMode, train_tokens_per_s: pTrain, train_by_mode: pTrainMode, train_mfu: mfu(pTrain), decode_b1_tokens_per_s: pDec('b1'), decode_b1_lora_tokens_per_s: pDec('b1+lora'), decode_b32_tokens_per_s: pDec('b32'), decode_b1_of_bound: pDec('b1') / bound1 },
  ratio: { train: eTrain / pTrain, decode_b1: eDec(1) / pDec('b1'), decode_b32: eDec(32) / pDec('b32') },
  failures: [...engineRuns.flatMap((e) => [e.train, ...Object.values(e.decode)]).filter((r) => r && !r.ok).map((r) => ({ cmd: r!.cmd, error: r!.error?.slice(0, 800) })),
    ...peerRuns.filter((p) => !p.out.ok).map((p) => ({ cmd: p.out.cmd, error: p.out.error?.slice(0, 800) })),
    ...okPeers.flatMap((p) => Object.entries({ ...p.train_errors, ...p.decode_errors }).map(([k, v]) => ({ cmd: `peer ${k}`, error: String(v) })))],
  wall_s: (Date.now() - t0) / 1000,
};
save();
writeFileSync(join(outDir, 'gpu-bench.json'), JSON.stringify(summary, null, 1));
writeFileSync(join(outDir, 'gpu-bench.md'), `${gpuLine}; ${peak.basis}\n\n${table}\n`);
process.stdout.write(`\n${gpuLine}\n${peak.basis}\n\n${table}\n\n${JSON.stringify(summary)}\n`);
