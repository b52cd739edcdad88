// What a SEAL configuration implies before running it: inner-loop runs, tokens trained and
// generated, and a time estimate from the model's FLOPs per token and an assumed engine speed.
import type { ModelConfig } from '../model/hf-config.js';
import { flopsPerToken } from '../bench/engine-bench.js';

export interface WorkEstimate {
  contexts: number;
  questions: number;
  inner_runs: number;
  train_tokens: number;
  generated_tokens: number;
  estimated_seconds: number;
  assumptions: string[];
}

export interface EstimateInput {
  config: ModelConfig;
  /** Tokens of each evaluation context's passage and its number of questions. */
  evalContexts: { passageTokens: number; questions: number }[];
  trainContexts: { passageTokens: number; questions: number }[];
  rounds: number;
  contextsPerRound: number;
  samples: number;
  repeats: number;
  /** Conditions on the eval contexts that train (passage only, base self-edits, one per round). */
  trainingEvalConditions: number;
  selfEditConditions: number;
  epochs: number;
  rank: number;
  answerTokens: number;
  selfEditTokens: number;
  /** Sustained engine speed assumed for the estimate. */
  gflops: number;
}

export function estimateWork(i: EstimateInput): WorkEstimate {
  // A self-edit is assumed about as long as its passage (implication lists are, §1.3 of the
  // reference), so one application trains ~2 x passage tokens per epoch (self-edit + passage).
  const perRun = (p: number) => 2 * p * i.epochs;
  const evalQuestions = i.evalContexts.reduce((a, c) => a + c.questions, 0);
  const avg = (xs: { passageTokens: number; questions: number }[], f: (c: { passageTokens: number; questions: number }) => number) => xs.length ? xs.reduce((a, c) => a + f(c), 0) / xs.length : 0;
  const perRoundContexts = Math.min(i.contextsPerRound, i.trainContexts.length);
  const rlRuns = i.rounds * perRoundContexts * i.samples * i.repeats;
  const evalRuns = i.trainingEvalConditions * i.evalContexts.length;
  const trainTokens = i.trainingEvalConditions * i.evalContexts.reduce((a, c) => a + perRun(c.passageTokens), 0) +
    rlRuns * perRun(avg(i.trainContexts, (c) => c.passageTokens));
  const answerRuns = evalRuns + i.evalContexts.length + rlRuns;  // + the no-adaptation evaluation
  const generated = answerRuns * i.answerTokens * Math.max(avg(i.evalContexts, (c) => c.questions), avg(i.trainContexts, (c) => c.questions)) +
    (i.selfEditConditions * i.evalContexts.length + i.rounds * perRoundContexts * i.samples) * i.selfEditTokens;
  const seq = 256;
  const trainFlops = trainTokens * flopsPerToken(i.config, seq, 'train', i.rank);
  const genFlops = generated * flopsPerToken(i.config, seq, 'forward', 0);
  return {
    contexts: i.evalContexts.length + i.rounds * perRoundContexts,
    questions: evalQuestions,
    inner_runs: evalRuns + rlRuns,
    train_tokens: Math.round(trainTokens),
    generated_tokens: Math.round(generated),
    estimated_seconds: Math.round((trainFlops + genFlops) / (i.gflops * 1e9)),
    assumptions: [
      'a self-edit is as long as its passage',
      `engine sustains ${i.gflops} GFLOP/s (decode is memory-bound and usually slower: treat the time as a lower bound)`,
      `self-edits use the full ${i.selfEditTokens}-token budget`,
    ],
  };
}
