// Judges of the knowledge domain. The OpenAI-compatible judge is exercised against a real HTTP
// server started here on 127.0.0.1 (node:http, port 0) that answers like /v1/chat/completions,
// with scripted failures: 500/429, a request that never answers, malformed JSON, 401. Timeouts
// and backoff delays are a few milliseconds so the file runs in about a second; a watchdog ends
// the process if anything hangs.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import {
  ExactMatchJudge,
  F1ThresholdJudge,
  JudgeRequestError,
  OpenAICompatibleJudge,
  parseYesNo,
  type JudgeItem,
  type OpenAICompatibleJudgeOptions,
} from '../lib/domains/knowledge/judges.js';
import { judgePrompt } from '../lib/domains/knowledge/prompts.js';
import { VerdictCache, verdictKey } from '../lib/domains/knowledge/verdict-cache.js';

// Armed when this suite starts (uvu imports every file before it runs the first suite, so a timer
// set at import would count the other suites' time too).
let watchdog: NodeJS.Timeout | undefined;

// ---------------------------------------------------------------- the fake API server

interface Seen {
  url: string | undefined;
  auth: string | undefined;
  body: { model?: string; messages?: { role: string; content: string }[] };
  prompt: string;
  /** The "Student answer:" line of the judge prompt. */
  prediction: string;
}

type Handler = (req: Seen, res: ServerResponse, n: number) => void;

let handler: Handler = (_req, res) => reply(res, 'yes');
let seen: Seen[] = [];
let inFlight = 0;
let maxInFlight = 0;
const open = new Set<ServerResponse>();

const server = createServer((req: IncomingMessage, res: ServerResponse) => {
  let data = '';
  req.setEncoding('utf8');
  req.on('data', (chunk: string) => (data += chunk));
  req.on('end', () => {
    const body = JSON.parse(data) as Seen['body'];
    const prompt = body.messages?.[0]?.content ?? '';
    const prediction = /\nStudent answer: (.*)\n/.exec(prompt)?.[1] ?? '';
    const s: Seen = { url: req.url, auth: req.headers.authorization, body, prompt, prediction };
    seen.push(s);
    inFlight += 1;
    maxInFlight = Math.max(maxInFlight, inFlight);
    open.add(res);
    res.on('close', () => {
      inFlight -= 1;
      open.delete(res);
    });
    handler(s, res, seen.length);
  });
});

function reply(res: ServerResponse, content: string, delayMs = 0): void {
  const send = () =>
    res.writeHead(200, { 'content-type': 'application/json' }).end(
      JSON.stringify({
        id: 'chatcmpl-test',
        object: 'chat.completion',
        model: 'judge-test',
        choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
      }),
    );
  if (delayMs > 0) setTimeout(send, delayMs);
  else send();
}

function fail(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(body);
}

let baseUrl = '';
const tmp = mkdtempSync(join(tmpdir(), 'sealkit-judge-'));
const KEY_ENV = 'SEALKIT_TEST_JUDGE_KEY';

test.before(async () => {
  watchdog = setTimeout(() => {
    console.error('knowledge-judge.test.ts: still running after 60 s — a request is hanging');
    process.exit(1);
  }, 60_000);
  watchdog.unref();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/`; // trailing slash on purpose
  process.env[KEY_ENV] = 'sk-test-123';
});

test.before.each(() => {
  seen = [];
  maxInFlight = 0;
  handler = (_req, res) => reply(res, 'yes');
});

test.after(async () => {
  delete process.env[KEY_ENV];
  for (const res of open) res.destroy();
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  rmSync(tmp, { recursive: true, force: true });
  clearTimeout(watchdog);
});

function judge(options: OpenAICompatibleJudgeOptions = {}): OpenAICompatibleJudge {
  return new OpenAICompatibleJudge({
    baseUrl,
    model: 'judge-test',
    apiKeyEnv: KEY_ENV,
    timeoutMs: 2_000,
    baseDelayMs: 5,
    maxDelayMs: 20,
    ...options,
  });
}

function item(prediction: string, question = 'Topic: Super Bowl 50\nWho won?', gold = 'Denver Broncos'): JudgeItem {
  return { question, gold, prediction };
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

// ---------------------------------------------------------------- yes/no parsing

test('parseYesNo: the reference rule plus a leading verdict word', () => {
  const cases: [string, string][] = [
    ['yes', 'yes'],
    ['Yes.', 'yes'],
    ['**YES**', 'yes'],
    ['no', 'no'],
    ['No.', 'no'],
    ['  NO\n', 'no'],
    ['Yes — no contradiction with the gold answer.', 'yes'], // first word decides
    ['No, not yes.', 'no'],
    ['The student answer is correct: yes', 'yes'], // reference rule: yes and no "no"
    ['Answer: no', 'no'],
    ['I think so, but maybe not: yes or no?', 'unclear'],
    ['I cannot tell', 'unclear'],
    ['', 'unclear'],
    ['yesterday', 'unclear'], // word boundaries
    ['nope', 'unclear'],
  ];
  for (const [text, want] of cases) assert.is(parseYesNo(text), want, JSON.stringify(text));
});

// ---------------------------------------------------------------- offline judges

test('ExactMatchJudge and F1ThresholdJudge (SQuAD v1.1), empty predictions wrong', async () => {
  const items = [item('the Denver Broncos.'), item('Broncos'), item('It was the Denver Broncos'), item('  '), item('')];
  assert.equal(await new ExactMatchJudge().grade(items), [true, false, false, false, false]);
  // F1 against "Denver Broncos": 1, 2/3, 2/3 ("it was denver broncos"), 0, 0.
  assert.equal(await new F1ThresholdJudge({ threshold: 0.6 }).grade(items), [true, true, true, false, false]);
  assert.equal(await new F1ThresholdJudge({ threshold: 0.7 }).grade(items), [true, false, false, false, false]);
  // Empty prediction stays wrong even when the gold normalises to empty (EM would say equal).
  assert.equal(await new ExactMatchJudge().grade([item('', 'q', 'the')]), [false]);
  assert.throws(() => new F1ThresholdJudge({ threshold: 0 }), /threshold must be a number in \(0, 1\]/);
  assert.throws(() => new F1ThresholdJudge({ threshold: 1.5 }), /threshold/);
  assert.equal(await new ExactMatchJudge().grade([]), []);
});

// ---------------------------------------------------------------- OpenAI-compatible judge

test('HTTP judge: verdicts, Bearer key from the named env var, request shape, empty predictions', async () => {
  const replies: Record<string, string> = {
    A: 'Yes',
    B: 'no.',
    C: '**YES**',
    D: 'Yes — no contradiction.',
    E: 'I cannot tell',
    F: 'No, yes',
  };
  handler = (req, res) => reply(res, replies[req.prediction] ?? 'no');
  const j = judge();
  const verdicts = await j.grade(['A', 'B', 'C', 'D', 'E', 'F', '   '].map((p) => item(p)));
  assert.equal(verdicts, [true, false, true, true, false, false, false]);
  assert.is(seen.length, 6, 'the empty prediction is not sent');
  assert.is(j.stats.emptyPredictions, 1);
  for (const s of seen) {
    assert.is(s.url, '/v1/chat/completions');
    assert.is(s.auth, 'Bearer sk-test-123');
    assert.is(s.body.model, 'judge-test');
    assert.equal(s.body.messages, [{ role: 'user', content: judgePrompt(item(s.prediction)) }]);
  }
  assert.equal(await j.grade([]), []);
});

test('HTTP judge: a missing key variable is a clear error and nothing is sent; apiKeyEnv null sends no key', async () => {
  const err = await rejection(judge({ apiKeyEnv: 'SEALKIT_TEST_NO_SUCH_VAR' }).grade([item('A')]));
  assert.instance(err, JudgeRequestError);
  assert.match(err.message, /environment variable SEALKIT_TEST_NO_SUCH_VAR is not set/);
  assert.is(seen.length, 0);

  assert.equal(await judge({ apiKeyEnv: null }).grade([item('A')]), [true]);
  assert.is(seen[0]!.auth, undefined);
  assert.equal(await judge({ apiKeyEnv: 'OTHER', env: { OTHER: 'sk-other' } }).grade([item('A')]), [true]);
  assert.is(seen[1]!.auth, 'Bearer sk-other');
});

test('HTTP judge: 500 then success is retried; 429 with Retry-After too', async () => {
  handler = (_req, res, n) => (n === 1 ? fail(res, 500, '{"error":{"message":"upstream exploded"}}') : reply(res, 'yes'));
  const retries: string[] = [];
  const j = judge({ onRetry: (e) => retries.push(e.reason) });
  assert.equal(await j.grade([item('A')]), [true]);
  assert.is(seen.length, 2);
  assert.is(j.stats.retries, 1);
  assert.match(retries[0]!, /^HTTP 500/);

  seen = [];
  handler = (_req, res, n) => (n === 1 ? fail(res, 429, '{"error":"slow down"}', { 'retry-after': '0' }) : reply(res, 'no'));
  assert.equal(await judge().grade([item('A')]), [false]);
  assert.is(seen.length, 2);
});

test('HTTP judge: a hanging request times out and is retried', async () => {
  handler = (_req, res, n) => {
    if (n === 1) return; // never answer
    reply(res, 'yes');
  };
  const retries: string[] = [];
  const j = judge({ timeoutMs: 150, onRetry: (e) => retries.push(e.reason) });
  const t0 = performance.now();
  const verdicts = await j.grade([item('A')]);
  const elapsed = performance.now() - t0;
  assert.equal(verdicts, [true]);
  assert.is(seen.length, 2);
  assert.is(j.stats.requests, 2);
  assert.match(retries[0]!, /no complete reply within 150 ms/);
  assert.ok(elapsed >= 140 && elapsed < 2_000, `took ${elapsed.toFixed(0)} ms`);
});

test('HTTP judge: malformed JSON fails after the retries with status and snippet', async () => {
  handler = (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('not json {"choices": oops');
  const j = judge({ maxRetries: 2 });
  const err = await rejection(j.grade([item('A')]));
  assert.instance(err, JudgeRequestError);
  const e = err as JudgeRequestError;
  assert.is(seen.length, 3);
  assert.is(e.attempts, 3);
  assert.is(e.status, 200);
  assert.is(e.snippet, 'not json {"choices": oops');
  assert.match(e.message, /after 3 attempts: HTTP 200: malformed reply \(not JSON\): "not json \{\\"choices\\": oops"/);
  assert.match(e.message, /\/v1\/chat\/completions \(model judge-test\)/);

  // Valid JSON without choices[0].message.content is malformed too.
  seen = [];
  handler = (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"error":{"message":"quota"}}');
  const err2 = (await rejection(judge({ maxRetries: 1 }).grade([item('A')]))) as JudgeRequestError;
  assert.is(seen.length, 2);
  assert.match(err2.message, /malformed reply \(no choices\[0\]\.message\.content text\): "\{\\"error\\"/);
});

test('HTTP judge: 401 is not retried; the error carries status and snippet', async () => {
  handler = (_req, res) => fail(res, 401, '{"error":{"message":"Incorrect API key provided"}}');
  const err = (await rejection(judge().grade([item('A'), item('B'), item('C')]))) as JudgeRequestError;
  assert.instance(err, JudgeRequestError);
  assert.is(err.status, 401);
  assert.is(err.attempts, 1);
  assert.match(err.message, /not retryable.*HTTP 401: Unauthorized: .*Incorrect API key provided/);
  assert.ok(seen.length <= 3);
});

test('HTTP judge: verdict cache persists across instances (no second request), keyed by model', async () => {
  const cachePath = join(tmp, 'cache', 'verdicts.jsonl');
  handler = (req, res) => reply(res, req.prediction === 'A' ? 'yes' : 'no');
  const first = judge({ cachePath });
  assert.equal(await first.grade([item('A'), item('B')]), [true, false]);
  assert.is(seen.length, 2);
  const lines = readFileSync(cachePath, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.is(lines.length, 2);
  const prompt = judgePrompt(item('A'));
  const recordA = lines.find((l) => l.key === verdictKey('judge-test', prompt));
  assert.equal(recordA, { key: verdictKey('judge-test', prompt), model: 'judge-test', verdict: true, reply: 'yes', prompt });

  const second = judge({ cachePath });
  assert.equal(await second.grade([item('A'), item('B'), item('A')]), [true, false, true]);
  assert.is(seen.length, 2, 'the server sees no second request');
  assert.is(second.stats.cacheHits, 3);
  assert.is(second.stats.requests, 0);

  // Another model is another key.
  assert.equal(await judge({ cachePath, model: 'judge-test-2' }).grade([item('A')]), [true]);
  assert.is(seen.length, 3);
  assert.is(seen[2]!.body.model, 'judge-test-2');

  // A cache-only run needs no API key.
  assert.equal(await judge({ cachePath, apiKeyEnv: 'SEALKIT_TEST_NO_SUCH_VAR' }).grade([item('B')]), [false]);
});

test('verdict cache: a truncated last line is dropped and appends continue on a fresh line; corruption elsewhere is an error', async () => {
  const path = join(tmp, 'truncated.jsonl');
  const good = { key: 'k1', model: 'm', verdict: true, reply: 'yes' };
  writeFileSync(path, `${JSON.stringify(good)}\n{"key":"k2","mod`);
  const cache = await VerdictCache.open(path);
  assert.is(cache.size, 1);
  assert.is(cache.get('k1')?.verdict, true);
  await cache.put({ key: 'k3', model: 'm', verdict: false, reply: 'no' });
  const reopened = await VerdictCache.open(path);
  assert.is(reopened.size, 2);
  assert.is(reopened.get('k3')?.verdict, false);
  assert.is(readFileSync(path, 'utf8'), `${JSON.stringify(good)}\n${JSON.stringify({ key: 'k3', model: 'm', verdict: false, reply: 'no' })}\n`);

  // A complete last record without a final newline (hand-edited) is kept; appends start a new line.
  const noNewline = join(tmp, 'no-newline.jsonl');
  writeFileSync(noNewline, JSON.stringify(good));
  const c2 = await VerdictCache.open(noNewline);
  await c2.put({ key: 'k4', model: 'm', verdict: true, reply: 'yes' });
  assert.is((await VerdictCache.open(noNewline)).size, 2);

  const broken = join(tmp, 'broken.jsonl');
  writeFileSync(broken, `not json\n${JSON.stringify(good)}\n`);
  assert.match((await rejection(VerdictCache.open(broken))).message, /broken\.jsonl:1: not valid JSON/);
  writeFileSync(broken, `${JSON.stringify(good)}\n${JSON.stringify({ ...good, verdict: 'yes' })}\n`);
  assert.match((await rejection(VerdictCache.open(broken))).message, /broken\.jsonl:2: not a verdict record .*verdict/);
});

test('HTTP judge: bounded concurrency, duplicates asked once', async () => {
  handler = (_req, res) => reply(res, 'yes', 40);
  const j = judge({ concurrency: 3 });
  const items = ['A', 'B', 'C', 'D', 'E', 'F', 'G', 'H'].map((p) => item(p));
  assert.equal(await j.grade(items), items.map(() => true));
  assert.is(seen.length, 8);
  assert.ok(maxInFlight <= 3, `max in flight ${maxInFlight}`);
  assert.ok(maxInFlight >= 2, `requests should overlap (max in flight ${maxInFlight})`);

  seen = [];
  assert.equal(await judge({ concurrency: 4 }).grade([item('X'), item('X'), item('X')]), [true, true, true]);
  assert.is(seen.length, 1);

  // Two grade() calls on one judge share its limit.
  seen = [];
  maxInFlight = 0;
  const shared = judge({ concurrency: 2 });
  await Promise.all([shared.grade(items.slice(0, 4)), shared.grade(items.slice(4))]);
  assert.ok(maxInFlight <= 2, `max in flight ${maxInFlight}`);
});

test('HTTP judge: option validation', () => {
  assert.throws(() => judge({ concurrency: 0 }), /concurrency must be an integer ≥ 1/);
  assert.throws(() => judge({ maxRetries: -1 }), /maxRetries/);
  assert.throws(() => judge({ timeoutMs: 1.5 }), /timeoutMs/);
  assert.is(judge().url, `${baseUrl.replace(/\/$/, '')}/chat/completions`);
});

test.run();
