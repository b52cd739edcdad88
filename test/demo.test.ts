// `seal demo --quick` on the committed toy-world model, through the CLI as a user runs it: the
// --json summary names the five conditions, every number in it traces to ledger lines, the run
// directory holds what the help promises, and --resume on the finished run changes nothing; and
// `seal demo arc --quick` on the committed toy few-shot model.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { InnerEntry, LedgerEntry } from '../lib/seal/ledger.js';
import { summarize, type RunSummary } from '../lib/seal/summary.js';
import { DEMO_SIZES } from '../lib/cli/commands/demo.js';
import { ARC_DEMO_SIZES } from '../lib/cli/commands/arc-demo.js';
import { repoRoot } from './helpers/fixtures.js';

const modelDir = join(repoRoot, 'models/toyworld');
const NAMES = ['no adaptation', 'passage only', 'base self-edits', 'SEAL round 1', 'SEAL round 2'];

interface DemoJson { conditions: { name: string; accuracy: number; ci95: number; questions: number }[]; run_dir: string }

const seal = (...args: string[]) => spawnSync(process.execPath, [join(repoRoot, 'bin/seal.js'), ...args], { cwd: repoRoot, encoding: 'utf8', timeout: 600_000 });
const lastJson = (out: string): DemoJson => JSON.parse(out.trim().split('\n').at(-1)!) as DemoJson;
const readLedger = (dir: string): LedgerEntry[] => readFileSync(join(dir, 'ledger.jsonl'), 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as LedgerEntry);

if (existsSync(join(modelDir, 'model.safetensors'))) {
  const root = mkdtempSync(join(tmpdir(), 'sealkit-demo-'));
  const runDir = join(root, 'run');

  test('seal demo --quick --json: the summary is consistent with the ledger', () => {
    const r = seal('demo', '--quick', '--json', '--run-dir', runDir, '--threads', '2');
    assert.is(r.status, 0, r.stderr);
    const out = lastJson(r.stdout);
    assert.is(out.run_dir, runDir);
    assert.equal(out.conditions.map((c) => c.name), NAMES);
    // The table is printed above the JSON line.
    for (const name of NAMES) assert.match(r.stdout, new RegExp(`^${name} `, 'm'));

    const ledger = readLedger(runDir);
    const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as RunSummary;
    assert.equal(JSON.parse(JSON.stringify(summarize(ledger, NAMES))), summary);
    const evalContexts = DEMO_SIZES.quick.evalPassages;
    for (const c of out.conditions) {
      const lines = ledger.filter((e): e is InnerEntry => e.type === 'inner' && e.phase === 'eval' && e.condition === c.name);
      assert.is(new Set(lines.map((e) => e.context)).size, evalContexts, c.name);
      const questions = lines.reduce((a, e) => a + e.total, 0);
      const correct = lines.reduce((a, e) => a + (e.items ?? []).filter((i) => i.correct).length, 0);
      assert.is(c.questions, questions, c.name);
      assert.ok(Math.abs(c.accuracy - correct / questions) < 1e-12, `${c.name}: ${c.accuracy} vs ${correct}/${questions}`);
      const p = correct / questions;
      assert.ok(Math.abs(c.ci95 - 1.96 * Math.sqrt((p * (1 - p)) / questions)) < 1e-9, `${c.name} ci95 ${c.ci95}`);
    }
    // Two ReST-EM rounds on RL-training passages (never the evaluation ones), each with a policy checkpoint.
    const evalIds = new Set(ledger.filter((e): e is InnerEntry => e.type === 'inner' && e.phase === 'eval').map((e) => e.context));
    for (const round of [1, 2]) {
      const train = ledger.filter((e): e is InnerEntry => e.type === 'inner' && e.phase === 'train' && e.round === round);
      assert.is(train.length, DEMO_SIZES.quick.contextsPerRound * DEMO_SIZES.quick.samples * DEMO_SIZES.quick.repeats);
      for (const e of train) assert.not.ok(evalIds.has(e.context), `${e.context} is an evaluation passage`);
      assert.ok(existsSync(join(runDir, 'policy', `round-${round}`, 'model.safetensors')));
    }
    assert.match(readFileSync(join(runDir, 'plot.svg'), 'utf8'), /<svg[^>]*>[\s\S]*SEAL round 2[\s\S]*<\/svg>\s*$/);
    const styles = JSON.parse(readFileSync(join(runDir, 'styles.json'), 'utf8')) as { condition: string }[];
    assert.equal(styles.map((s) => s.condition), NAMES.slice(2));
  });

  test('seal demo --resume on the finished run: nothing is recomputed, the same summary', () => {
    const before = readFileSync(join(runDir, 'ledger.jsonl'), 'utf8');
    const summary = readFileSync(join(runDir, 'summary.json'), 'utf8');
    const r = seal('demo', '--quick', '--json', '--resume', runDir);
    assert.is(r.status, 0, r.stderr);
    assert.is(readFileSync(join(runDir, 'ledger.jsonl'), 'utf8'), before);
    assert.is(readFileSync(join(runDir, 'summary.json'), 'utf8'), summary);
    assert.equal(lastJson(r.stdout).conditions.map((c) => c.accuracy), (JSON.parse(summary) as RunSummary).conditions.map((c) => c.accuracy));
    // Resuming with other settings (the full demo's sizes) is refused before any work, saying what differs.
    const other = seal('demo', '--resume', runDir);
    assert.is(other.status, 1);
    assert.match(other.stderr, /was started with a different configuration \(contextsPerRound: 6 then, 64 now; samples: 3 then, 8 now;/);
    assert.is(readFileSync(join(runDir, 'ledger.jsonl'), 'utf8'), before);
  });

  test('seal demo: bad arguments are usage errors', () => {
    const r = seal('demo', '--seed=-1');
    assert.is(r.status, 2, r.stderr);
    assert.match(r.stderr, /--seed must be a non-negative integer/);
    const m = seal('demo', '--model', join(root, 'nowhere'));
    assert.is(m.status, 2);
    assert.match(m.stderr, /no model\.safetensors in/);
    const u = seal('demo', '--no-such-option');
    assert.is(u.status, 2);
    assert.match(u.stderr, /Unknown option '--no-such-option'/);
  });

  test.after(() => rmSync(root, { recursive: true, force: true }));
} else {
  test.skip('seal demo --quick (models/toyworld absent)', () => {});
  console.log(`skip: seal demo (no ${modelDir}/model.safetensors)`);
}

const arcModelDir = join(repoRoot, 'models/toy-arc');
if (existsSync(join(arcModelDir, 'model.safetensors'))) {
  test('seal demo arc --quick --json: four conditions, task counts and accuracies from the ledger', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sealkit-demo-arc-'));
    try {
      const runDir = join(dir, 'run');
      const r = seal('demo', 'arc', '--quick', '--json', '--run-dir', runDir, '--threads', '2');
      assert.is(r.status, 0, r.stderr);
      const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { conditions: { name: string; accuracy: number; tasks: number; evaluations: number }[]; run_dir: string };
      assert.equal(out.conditions.map((c) => c.name), ['no adaptation', 'fixed TTT', 'base self-edits', 'SEAL']);
      const ledger = readLedger(runDir);
      for (const c of out.conditions) {
        const lines = ledger.filter((e): e is InnerEntry => e.type === 'inner' && e.phase === 'eval' && e.condition === c.name);
        // Self-edit conditions score evalSamples self-edits per task, the reference's (task, self-edit) pairs.
        const perTask = c.name === 'base self-edits' || c.name === 'SEAL' ? ARC_DEMO_SIZES.quick.evalSamples : 1;
        assert.is(c.tasks, ARC_DEMO_SIZES.quick.evalTasks, c.name);
        assert.is(new Set(lines.map((e) => e.context)).size, ARC_DEMO_SIZES.quick.evalTasks, c.name);
        assert.is(lines.length, ARC_DEMO_SIZES.quick.evalTasks * perTask, c.name);
        assert.is(c.evaluations, lines.length, c.name);
        assert.ok(Math.abs(c.accuracy - lines.reduce((a, e) => a + e.score, 0) / lines.length) < 1e-12, c.name);
      }
      // Invalid self-edits (unparsable or over budget) are in the ledger with reward 0, never a crash.
      for (const e of ledger) if (e.type === 'inner' && !e.valid) { assert.is(e.score, 0); assert.ok(e.reason); }
      // The tasks are those the base model fails in context: no adaptation solves none of them, and
      // the recorded selection is what the run used.
      assert.is(out.conditions[0]!.accuracy, 0);
      const selection = JSON.parse(readFileSync(join(runDir, 'task-selection.json'), 'utf8')) as Record<string, { ids: string[]; examined: number }>;
      const evalIds = ledger.filter((e): e is InnerEntry => e.type === 'inner' && e.phase === 'eval' && e.condition === 'no adaptation').map((e) => e.context);
      assert.equal([...evalIds].sort(), [...selection.eval!.ids].sort());
      assert.is(selection.rl!.ids.length, ARC_DEMO_SIZES.quick.trainTasks);
      assert.ok(selection.eval!.examined >= ARC_DEMO_SIZES.quick.evalTasks);
      // Resuming on other tasks would mix two experiments in one ledger: refused before any work.
      const other = seal('demo', 'arc', '--quick', '--tasks', 'all', '--resume', runDir);
      assert.is(other.status, 2, other.stderr);
      assert.match(other.stderr, /was run on other tasks/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
} else {
  test.skip('seal demo arc --quick (models/toy-arc absent)', () => {});
  console.log(`skip: seal demo arc (no ${arcModelDir}/model.safetensors)`);
}

test.run();
