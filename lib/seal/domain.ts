// What a SEAL domain supplies to the domain-agnostic loop (lib/seal): the self-edit prompt for a
// context, how a self-edit becomes training data (and inner-loop hyper-parameters, which a
// self-edit may set), and how an adapted model is scored on the context's downstream check.
import type { Model } from '../model/model.js';
import type { ProjName } from '../model/native-model.js';
import type { SftExample } from '../model/sft.js';
import type { TextTokenizer } from '../model/tokenizer.js';

/** A unit of new information: a passage with its questions, a few-shot task, … */
export interface SealContext {
  /** Stable id (used as ledger key and for resuming). */
  id: string;
}

/** Hyper-parameters of one inner-loop LoRA fine-tune. */
export interface InnerLoopConfig {
  rank: number;
  alpha: number;
  targets: ProjName[];
  dropout: number;
  lr: number;
  epochs: number;
  batchSize: number;
  schedule: 'constant' | 'linear' | 'cosine';
  maxGradNorm: number;
  weightDecay: number;
}

export type SelfEditTraining =
  | { ok: true; examples: SftExample[]; config: InnerLoopConfig }
  | { ok: false; reason: string };

export interface QuestionResult {
  question: string;
  gold: string;
  prediction: string;
  correct: boolean;
}

/** A domain's downstream check of one adapted model (or of the base model, slot -1). */
export interface Evaluation {
  /** Fraction correct in [0, 1]: the reward. */
  score: number;
  correct: number;
  total: number;
  items: QuestionResult[];
}

export interface Domain<C extends SealContext> {
  readonly name: string;
  /** Inner-loop defaults (a self-edit may override some, see buildTraining). */
  readonly innerDefaults: InnerLoopConfig;
  /** Token ids the policy continues with a self-edit. */
  selfEditPrompt(ctx: C, tok: TextTokenizer): number[];
  /** Longest self-edit sampled (tokens) and strings that end one. */
  readonly selfEditMaxTokens: number;
  readonly selfEditStop: readonly string[];
  /** Turns a self-edit into training sequences (+ its inner-loop config), or says why it is invalid. */
  buildTraining(ctx: C, selfEdit: string, tok: TextTokenizer): SelfEditTraining;
  /** The training set of the "passage only" / fixed-configuration baseline condition. */
  baselineTraining(ctx: C, tok: TextTokenizer): SelfEditTraining;
  /**
   * Scores the model under each adapter slot (-1 = no adaptation) on the context's check. Slots are
   * evaluated together so one batched generation serves them all.
   */
  evaluate(model: Model, tok: TextTokenizer, ctx: C, slots: number[]): Promise<Evaluation[]>;
  /**
   * Size of the context's check (Evaluation.total), so an invalid self-edit, which is not evaluated,
   * still counts as that many failed questions in accuracies (default 0: left out).
   */
  checkSize?(ctx: C): number;
}
