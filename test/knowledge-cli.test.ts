// `seal knowledge` through the CLI: the reference's evaluation selection in --dry-run, and a tiny
// end-to-end evaluation (no adaptation / passage only / base self-edits) on a real small model.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { InnerEntry } from '../lib/seal/ledger.js';
import { hasShared, repoRoot, sharedDir } from './helpers/fixtures.js';

const seal = (...a: string[]) => spawnSync(process.execPath, [join(repoRoot, 'bin/seal.js'), ...a], { encoding: 'utf8', timeout: 300_000 });
const lastJson = (out: string) => JSON.parse(out.trim().split('\n').at(-1)!) as Record<string, unknown>;

if (hasShared) {
  const model = join(sharedDir, 'models/tinystories-656k');
  const val = join(sharedDir, 'data/seal-knowledge/squad_val.json');
  test('knowledge eval --dry-run --json selects the reference 200 passages (974 questions)', () => {
    const r = seal('knowledge', 'eval', '--model', model, '--data', val, '--dry-run', '--json');
    assert.equal(r.status, 0, r.stderr);
    const j = lastJson(r.stdout);
    assert.equal(j.contexts, 200);
    assert.equal(j.questions, 974);
    assert.equal(j.inner_runs, 400);
    for (const k of ['train_tokens', 'generated_tokens', 'estimated_seconds']) assert.ok((j[k] as number) > 0, k);
  });

  test('knowledge eval end to end on 2 passages: three conditions, numbers from the ledger, report agrees', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sealkit-knowledge-'));
    try {
      const r = seal('knowledge', 'eval', '--model', model, '--data', val, '--passages', '2', '--epochs', '1', '--self-edit-tokens', '24', '--judge', 'f1:0.3', '--run-dir', dir, '--json');
      assert.equal(r.status, 0, r.stderr);
      const j = lastJson(r.stdout) as { conditions: { name: string; questions: number; accuracy: number }[]; run_dir: string };
      assert.equal(j.conditions.map((c) => c.name), ['no adaptation', 'passage only', 'base self-edits']);
      const ledger = readFileSync(join(dir, 'ledger.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as InnerEntry);
      for (const c of j.conditions) {
        const lines = ledger.filter((e) => e.type === 'inner' && e.condition === c.name);
        assert.equal(lines.length, 2);
        assert.equal(c.questions, lines.reduce((a, e) => a + e.total, 0));
      }
      const rep = seal('report', dir, '--json');
      assert.equal(rep.status, 0, rep.stderr);
      const summary = lastJson(rep.stdout) as { conditions: { name: string; accuracy: number }[] };
      assert.equal(summary.conditions.map((c) => c.accuracy), j.conditions.map((c) => c.accuracy));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  test('knowledge cpt and continual run end to end on a few passages', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sealkit-knowledge-'));
    try {
      const cpt = seal('knowledge', 'cpt', '--model', model, '--data', val, '--passages', '3', '--samples', '2', '--epochs', '1', '--self-edit-tokens', '16', '--run-dir', join(dir, 'cpt'), '--json');
      assert.equal(cpt.status, 0, cpt.stderr);
      const c = lastJson(cpt.stdout) as { baseline: { total: number }; adapted: { total: number }; sequences: number };
      assert.equal(c.baseline.total, c.adapted.total);
      assert.ok(c.adapted.total > 0);
      assert.ok(c.sequences >= 3 * 2, 'at least one sequence per self-edit');
      const cont = seal('knowledge', 'continual', '--model', model, '--data', val, '--steps', '3', '--sequences', '2', '--epochs', '1', '--self-edit-tokens', '16', '--run-dir', join(dir, 'cont'), '--json');
      assert.equal(cont.status, 0, cont.stderr);
      const m = (lastJson(cont.stdout) as { mean: (number | null)[][] }).mean;
      assert.equal(m.length, 4);
      // Lower-triangular: after r edits, contexts >= r are not evaluated (row 0 evaluates all).
      for (let r = 1; r <= 3; r++) for (let col = 0; col < 3; col++) assert.equal(m[r]![col] === null, col >= r, `cell ${r},${col}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
} else {
  test.skip('knowledge CLI on SEAL data (../shared absent)', () => {});
  console.log('skip: ../shared is absent; knowledge CLI tests need squad_val.json and TinyStories-656K');
}

test('knowledge: bad arguments are usage errors', () => {
  const r = seal('knowledge', 'frob');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /expected 'eval', 'rl', 'cpt' or 'continual'/);
  const v = seal('knowledge', 'eval', '--model', 'x', '--data', 'y', '--variant', 'nope');
  assert.equal(v.status, 2);
  assert.match(v.stderr, /unknown --variant/);
});

test.run();
