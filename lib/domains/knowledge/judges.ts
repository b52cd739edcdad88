// Graders for the knowledge-incorporation domain: "is this answer correct?" for a batch.
//
// The reference's only grader is GPT-4.1 over the network (seal-method.md §1.6) — a hard
// dependency that §7 item 3 asks to make pluggable. `Judge` is that plug: the inner loop hands
// it (question, gold, prediction) triples and gets booleans back. Implementations here:
//   ExactMatchJudge / F1ThresholdJudge — offline SQuAD v1.1 proxies (squad-metrics.ts);
//   OpenAICompatibleJudge — the reference's yes/no prompt against any chat-completions server
//     (OpenAI, vLLM, llama.cpp ...), with retries, timeouts, bounded concurrency and a persistent
//     verdict cache (verdict-cache.ts).
// A judge backed by a local sealkit model is built on the same interface elsewhere.
//
// Rule shared by every judge, from the reference (§1.6): an empty prediction (after Python
// strip) is incorrect and is never sent to a grader. The adapted models of the reference answer
// empty on 8–17% of questions (§1.4), so this matters for the numbers.

import type { GradeInput } from './prompts.js';
import { judgePrompt } from './prompts.js';
import { pyStrip } from './py-text.js';
import { exactMatch, f1Score } from './squad-metrics.js';
import { VerdictCache, verdictKey } from './verdict-cache.js';

/** One answer to grade. `question` is the question as asked (the reference: Topic-prefixed, §1.5). */
export type JudgeItem = GradeInput;

export interface Judge {
  /** One verdict per item, in order: true = correct. */
  grade(items: readonly JudgeItem[]): Promise<boolean[]>;
}

function isEmptyPrediction(prediction: string): boolean {
  return pyStrip(prediction) === '';
}

/** Correct iff the prediction equals the gold after official SQuAD v1.1 normalisation. */
export class ExactMatchJudge implements Judge {
  async grade(items: readonly JudgeItem[]): Promise<boolean[]> {
    return items.map((it) => !isEmptyPrediction(it.prediction) && exactMatch(it.prediction, it.gold));
  }
}

export interface F1ThresholdJudgeOptions {
  /** Correct iff SQuAD token F1 ≥ threshold; in (0, 1]. No default: the cut-off is a modelling choice. */
  threshold: number;
}

/**
 * Correct iff the official SQuAD v1.1 token F1 reaches the threshold. Kinder than exact match to
 * the sentence-long answers the reference's prompt elicits (§1.5), though still a proxy for the
 * LLM judge.
 */
export class F1ThresholdJudge implements Judge {
  readonly threshold: number;

  constructor(options: F1ThresholdJudgeOptions) {
    const t = options.threshold;
    if (typeof t !== 'number' || !(t > 0 && t <= 1)) {
      throw new RangeError(`F1ThresholdJudge: threshold must be a number in (0, 1]; got ${String(t)}`);
    }
    this.threshold = t;
  }

  async grade(items: readonly JudgeItem[]): Promise<boolean[]> {
    return items.map((it) => !isEmptyPrediction(it.prediction) && f1Score(it.prediction, it.gold) >= this.threshold);
  }
}

export type YesNo = 'yes' | 'no' | 'unclear';

const YES_WORD = /\byes\b/i;
const NO_WORD = /\bno\b/i;
const FIRST_WORD = /[a-z]+/i;

/**
 * Reads a judge's yes/no reply.
 *
 * The reference (§1.6): correct iff the reply contains the word "yes" and not the word "no"
 * (case-insensitive, word boundaries), so "Yes.", "**YES**", "yes, it is" are yes. sealkit keeps
 * that and adds one rule in front: when the reply's first word is "yes" or "no", that word
 * decides ("Yes — no contradiction with the gold" is yes here; the reference would say no).
 * Replies with neither word, or with both and no leading verdict, are "unclear" — which every
 * judge counts as incorrect, as the reference does.
 */
export function parseYesNo(reply: string): YesNo {
  const first = FIRST_WORD.exec(reply)?.[0]?.toLowerCase();
  if (first === 'yes') return 'yes';
  if (first === 'no') return 'no';
  const yes = YES_WORD.test(reply);
  const no = NO_WORD.test(reply);
  if (yes && !no) return 'yes';
  if (no && !yes) return 'no';
  return 'unclear';
}

/** A judge request that could not be completed; the message says why, with status and a reply snippet. */
export class JudgeRequestError extends Error {
  override name = 'JudgeRequestError';
  /** HTTP status of the last attempt, when there was a response. */
  readonly status: number | undefined;
  /** Start of the last reply body, whitespace collapsed. */
  readonly snippet: string | undefined;
  /** Attempts made (0 when no request could be sent, e.g. a missing API key). */
  readonly attempts: number;
  constructor(message: string, status: number | undefined, snippet: string | undefined, attempts: number) {
    super(message);
    this.status = status;
    this.snippet = snippet;
    this.attempts = attempts;
  }
}

export interface RetryEvent {
  /** The attempt that failed (1-based). */
  attempt: number;
  /** How long the judge waits before the next attempt. */
  delayMs: number;
  reason: string;
}

export interface OpenAICompatibleJudgeOptions {
  /** Model name sent to the server. Default "gpt-4.1", the reference's grader (§1.6). */
  model?: string;
  /** API root; requests go to `${baseUrl}/chat/completions`. Default "https://api.openai.com/v1". */
  baseUrl?: string;
  /**
   * NAME of the environment variable holding the API key, sent as `Authorization: Bearer <key>`.
   * Default "OPENAI_API_KEY". `null` sends no key (local servers without auth). The variable is
   * read when a request is actually needed, so a run answered entirely from the cache needs no key.
   */
  apiKeyEnv?: string | null;
  /** Where the key variable is looked up. Default process.env. */
  env?: Readonly<Record<string, string | undefined>>;
  /** JSONL verdict cache; re-runs answer from it without asking. Default null (memory only, per instance). */
  cachePath?: string | null;
  /** Most requests in flight at once for this judge. Default 4. */
  concurrency?: number;
  /** Retries after the first attempt (network errors, timeouts, 408/429/5xx, malformed replies). Default 4. */
  maxRetries?: number;
  /** Per-attempt timeout, covering the whole response body. Default 60 000 ms. */
  timeoutMs?: number;
  /** First backoff delay; doubles per retry, with jitter. Default 1 000 ms. */
  baseDelayMs?: number;
  /** Longest backoff delay (also caps Retry-After). Default 30 000 ms. */
  maxDelayMs?: number;
  /** fetch implementation. Default globalThis.fetch. */
  fetch?: typeof fetch;
  /** Jitter source in [0, 1). Default Math.random. */
  random?: () => number;
  /** Called before each backoff wait (logging). */
  onRetry?: (event: RetryEvent) => void;
}

export interface JudgeStats {
  /** HTTP attempts made (including retried ones). */
  requests: number;
  /** Verdicts answered from the cache. */
  cacheHits: number;
  /** Backoff waits taken. */
  retries: number;
  /** Empty predictions graded incorrect without a request. */
  emptyPredictions: number;
}

type Attempt =
  | { ok: true; text: string }
  | { ok: false; retryable: boolean; reason: string; status?: number; snippet?: string; retryAfterMs?: number };

const SNIPPET_CHARS = 200;

function snippetOf(body: string): string {
  const flat = body.replace(/\s+/g, ' ').trim();
  return flat.length > SNIPPET_CHARS ? `${flat.slice(0, SNIPPET_CHARS)}…` : flat;
}

function positiveInt(name: string, value: number, min: number): number {
  if (!Number.isInteger(value) || value < min) {
    throw new RangeError(`OpenAICompatibleJudge: ${name} must be an integer ≥ ${min}; got ${String(value)}`);
  }
  return value;
}

/** `Retry-After` as milliseconds: delta-seconds or an HTTP date. */
function parseRetryAfter(value: string | null): number | undefined {
  if (value === null) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

/** choices[0].message.content as text (a string, or an array of {type:"text", text} parts). */
function replyContent(json: unknown): string | undefined {
  if (typeof json !== 'object' || json === null) return undefined;
  const choices = (json as { choices?: unknown }).choices;
  if (!Array.isArray(choices) || choices.length === 0) return undefined;
  const message = (choices[0] as { message?: unknown } | null)?.message;
  if (typeof message !== 'object' || message === null) return undefined;
  const content = (message as { content?: unknown }).content;
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    const texts = content.map((part) => (part as { text?: unknown } | null)?.text);
    if (texts.length > 0 && texts.every((t) => typeof t === 'string')) return texts.join('');
  }
  return undefined;
}

function describeError(err: unknown): string {
  const e = err as { message?: unknown; cause?: { code?: unknown; message?: unknown } };
  const cause = e?.cause?.code ?? e?.cause?.message;
  return `${String(e?.message ?? err)}${cause === undefined ? '' : ` (${String(cause)})`}`;
}

/** Counting semaphore: bounds requests in flight across every grade() call of one judge. */
class Semaphore {
  private free: number;
  private readonly waiters: (() => void)[] = [];
  constructor(n: number) {
    this.free = n;
  }
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.free > 0) this.free -= 1;
    else await new Promise<void>((resolve) => this.waiters.push(resolve));
    try {
      return await fn();
    } finally {
      const next = this.waiters.shift();
      if (next) next();
      else this.free += 1;
    }
  }
}

/**
 * The reference's LLM judge (§1.6) against an OpenAI-compatible `/chat/completions` endpoint:
 * the verbatim yes/no prompt as one user message, default sampling, reply read by parseYesNo.
 *
 * Differences from the reference, on purpose: verdicts are cached (keyed by model + prompt);
 * requests run concurrently (bounded) instead of sequentially; failures are retried with
 * exponential backoff and jitter and then REPORTED (JudgeRequestError) instead of silently
 * counted as "incorrect" — a lost verdict would bias the reward, and the cache makes the
 * re-run cheap.
 */
export class OpenAICompatibleJudge implements Judge {
  readonly model: string;
  readonly baseUrl: string;
  readonly stats: JudgeStats = { requests: 0, cacheHits: 0, retries: 0, emptyPredictions: 0 };

  private readonly apiKeyEnv: string | null;
  private readonly env: Readonly<Record<string, string | undefined>>;
  private readonly cachePath: string | null;
  private readonly concurrency: number;
  private readonly maxRetries: number;
  private readonly timeoutMs: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly fetchImpl: typeof fetch;
  private readonly random: () => number;
  private readonly onRetry: ((event: RetryEvent) => void) | undefined;
  private readonly requestSlots: Semaphore;
  private cache: Promise<VerdictCache> | undefined;
  /** One request per distinct prompt even when the same item is graded twice at once. */
  private readonly inflight = new Map<string, Promise<boolean>>();

  constructor(options: OpenAICompatibleJudgeOptions = {}) {
    this.model = options.model ?? 'gpt-4.1';
    this.baseUrl = (options.baseUrl ?? 'https://api.openai.com/v1').replace(/\/+$/, '');
    this.apiKeyEnv = options.apiKeyEnv === undefined ? 'OPENAI_API_KEY' : options.apiKeyEnv;
    this.env = options.env ?? process.env;
    this.cachePath = options.cachePath ?? null;
    this.concurrency = positiveInt('concurrency', options.concurrency ?? 4, 1);
    this.maxRetries = positiveInt('maxRetries', options.maxRetries ?? 4, 0);
    this.timeoutMs = positiveInt('timeoutMs', options.timeoutMs ?? 60_000, 1);
    this.baseDelayMs = positiveInt('baseDelayMs', options.baseDelayMs ?? 1_000, 0);
    this.maxDelayMs = positiveInt('maxDelayMs', options.maxDelayMs ?? 30_000, 0);
    this.fetchImpl = options.fetch ?? globalThis.fetch;
    this.random = options.random ?? Math.random;
    this.onRetry = options.onRetry;
    this.requestSlots = new Semaphore(this.concurrency);
  }

  get url(): string {
    return `${this.baseUrl}/chat/completions`;
  }

  /**
   * Grades the items with at most `concurrency` requests in flight. If an item cannot be graded
   * after its retries, no new items are started, the ones in flight finish (their verdicts are
   * cached), and the first error is thrown.
   */
  async grade(items: readonly JudgeItem[]): Promise<boolean[]> {
    const results = new Array<boolean>(items.length);
    let next = 0;
    let failed = false;
    let failure: unknown;
    const worker = async (): Promise<void> => {
      while (!failed) {
        const i = next++;
        if (i >= items.length) return;
        try {
          results[i] = await this.gradeOne(items[i]!);
        } catch (err) {
          if (!failed) {
            failed = true;
            failure = err;
          }
        }
      }
    };
    const workers = Math.min(this.concurrency, items.length);
    await Promise.all(Array.from({ length: workers }, worker));
    if (failed) throw failure;
    return results;
  }

  private openCache(): Promise<VerdictCache> {
    this.cache ??= VerdictCache.open(this.cachePath);
    return this.cache;
  }

  private async gradeOne(item: JudgeItem): Promise<boolean> {
    if (isEmptyPrediction(item.prediction)) {
      this.stats.emptyPredictions += 1;
      return false;
    }
    const prompt = judgePrompt(item);
    const key = verdictKey(this.model, prompt);
    const cache = await this.openCache();
    const hit = cache.get(key);
    if (hit !== undefined) {
      this.stats.cacheHits += 1;
      return hit.verdict;
    }
    const pending = this.inflight.get(key);
    if (pending !== undefined) return pending;
    const fresh = (async () => {
      const reply = await this.requestSlots.run(() => this.complete(prompt));
      const verdict = parseYesNo(reply) === 'yes';
      await cache.put({ key, model: this.model, verdict, reply, prompt });
      return verdict;
    })();
    this.inflight.set(key, fresh);
    try {
      return await fresh;
    } finally {
      this.inflight.delete(key);
    }
  }

  private headers(): Record<string, string> {
    const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' };
    if (this.apiKeyEnv !== null) {
      const key = this.env[this.apiKeyEnv];
      if (key === undefined || key === '') {
        throw new JudgeRequestError(
          `OpenAICompatibleJudge: environment variable ${this.apiKeyEnv} is not set; set it to the API key, choose another variable with apiKeyEnv, or pass apiKeyEnv: null for a server without authentication`,
          undefined,
          undefined,
          0,
        );
      }
      headers.authorization = `Bearer ${key}`;
    }
    return headers;
  }

  /** One prompt → the reply text, with retries; throws JudgeRequestError when out of attempts. */
  private async complete(prompt: string): Promise<string> {
    const headers = this.headers();
    const body = JSON.stringify({ model: this.model, messages: [{ role: 'user', content: prompt }] });
    const maxAttempts = this.maxRetries + 1;
    for (let attempt = 1; ; attempt++) {
      const outcome = await this.attempt(headers, body);
      if (outcome.ok) return outcome.text;
      if (!outcome.retryable || attempt >= maxAttempts) {
        const status = outcome.status === undefined ? '' : `HTTP ${outcome.status}: `;
        const snippet = outcome.snippet === undefined ? '' : `: ${JSON.stringify(outcome.snippet)}`;
        const tries = outcome.retryable ? `after ${attempt} attempt${attempt === 1 ? '' : 's'}` : `(not retryable, attempt ${attempt})`;
        throw new JudgeRequestError(
          `OpenAICompatibleJudge: POST ${this.url} (model ${this.model}) failed ${tries}: ${status}${outcome.reason}${snippet}`,
          outcome.status,
          outcome.snippet,
          attempt,
        );
      }
      const exp = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (attempt - 1));
      let delayMs = exp / 2 + (this.random() * exp) / 2; // "equal jitter": spreads clients, keeps growth
      if (outcome.retryAfterMs !== undefined) delayMs = Math.max(delayMs, Math.min(outcome.retryAfterMs, this.maxDelayMs));
      this.stats.retries += 1;
      this.onRetry?.({ attempt, delayMs, reason: outcome.status === undefined ? outcome.reason : `HTTP ${outcome.status}: ${outcome.reason}` });
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }

  private async attempt(headers: Record<string, string>, body: string): Promise<Attempt> {
    this.stats.requests += 1;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.timeoutMs);
    const failedTransport = (err: unknown): Attempt => ({
      ok: false,
      retryable: true,
      reason: controller.signal.aborted ? `no complete reply within ${this.timeoutMs} ms` : `network error: ${describeError(err)}`,
    });
    try {
      let res: Response;
      try {
        res = await this.fetchImpl(this.url, { method: 'POST', headers, body, signal: controller.signal });
      } catch (err) {
        return failedTransport(err);
      }
      let text: string;
      try {
        text = await res.text();
      } catch (err) {
        return failedTransport(err);
      }
      if (!res.ok) {
        // 408/429/5xx are transient by definition; other 4xx (bad key, bad model) will not heal.
        const retryable = res.status === 408 || res.status === 429 || res.status >= 500;
        const retryAfterMs = parseRetryAfter(res.headers.get('retry-after'));
        return {
          ok: false,
          retryable,
          reason: res.statusText === '' ? 'error reply' : res.statusText,
          status: res.status,
          snippet: snippetOf(text),
          ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
        };
      }
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        return { ok: false, retryable: true, reason: 'malformed reply (not JSON)', status: res.status, snippet: snippetOf(text) };
      }
      const content = replyContent(json);
      if (content === undefined) {
        return {
          ok: false,
          retryable: true,
          reason: 'malformed reply (no choices[0].message.content text)',
          status: res.status,
          snippet: snippetOf(text),
        };
      }
      return { ok: true, text: content };
    } finally {
      clearTimeout(timer);
    }
  }
}
