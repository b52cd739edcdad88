// The A/B benchmarks' environment handling (lib/bench/env.ts): `--ab-env` / `--a-env` lists parse,
// and a variant's variables are set only while it runs, restored after it returns, throws or settles.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseEnvList, withEnv } from '../lib/bench/env.js';

const SET = 'SEALKIT_TEST_ENV_SET', UNSET = 'SEALKIT_TEST_ENV_UNSET';

function fresh(): void {
  process.env[SET] = 'before';
  delete process.env[UNSET];
}

function assertRestored(what: string): void {
  assert.is(process.env[SET], 'before', `${what}: a set variable gets its value back`);
  assert.is(process.env[UNSET], undefined, `${what}: an unset variable is removed again`);
}

test('parseEnvList: K=V pairs, values may hold =, malformed entries name the option', () => {
  assert.equal(parseEnvList('A=1,B=x=y', '--ab-env'), { A: '1', B: 'x=y' });
  assert.equal(parseEnvList('', '--a-env'), {});
  for (const bad of ['A', '=1', 'A=1,B']) assert.throws(() => parseEnvList(bad, '--b-env'), /--b-env expects K=V/);
});

test('withEnv: synchronous fn sees the variables; they are restored after a return or a throw', () => {
  fresh();
  const seen = withEnv({ [SET]: 'during', [UNSET]: '1' }, () => [process.env[SET], process.env[UNSET]]);
  assert.equal(seen, ['during', '1']);
  assertRestored('return');
  assert.throws(() => withEnv({ [SET]: 'during', [UNSET]: '1' }, () => { throw new Error('boom'); }), /boom/);
  assertRestored('throw');
});

test('withEnv: an async fn keeps the variables until its promise settles, then they are restored', async () => {
  fresh();
  let inside: string | undefined;
  const p = withEnv({ [SET]: 'during', [UNSET]: '1' }, async () => {
    await new Promise((r) => setTimeout(r, 5));
    inside = process.env[UNSET];
    return 7;
  });
  assert.is(process.env[UNSET], '1', 'set while the promise is pending');
  assert.is(await p, 7);
  assert.is(inside, '1');
  assertRestored('resolve');
  await withEnv({ [SET]: 'during', [UNSET]: '1' }, async () => { throw new Error('late'); }).then(
    () => assert.unreachable('should reject'),
    (e: Error) => assert.match(e.message, /late/),
  );
  assertRestored('reject');
});

test.run();
