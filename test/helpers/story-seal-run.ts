// Runs (or resumes) a small SEAL run on the story domain: `tsx test/helpers/story-seal-run.ts RUN_DIR`.
// Used by the crash/resume test, which kills this process at random points.
import { join } from 'node:path';
import { TextTokenizer } from '../../lib/model/tokenizer.js';
import { runSeal, type SealConfig } from '../../lib/seal/loop.js';
import { sharedDir } from './fixtures.js';
import { storyContexts, storyDomain } from './story-domain.js';

export const STORY_CONFIG: SealConfig = {
  seed: 7, rounds: 2, contextsPerRound: 3, samples: 2, repeats: 2,
  filter: { kind: 'best-of-k' }, sampling: { temperature: 1, topP: 0.95 },
  policy: { rank: 4, alpha: 8, lr: 2e-3, epochs: 2, batchSize: 2 }, parallel: 3,
  baselines: { noAdaptation: true, baselineTraining: true, baseSelfEdits: true },
  names: { noAdaptation: 'no adaptation', baselineTraining: 'passage only', baseSelfEdits: 'base self-edits', round: 'SEAL round {r}' },
};

/** The story run, or a variant of it: fewer contexts, configuration fields replaced. */
export interface StoryRunVariant {
  trainContexts?: number;
  evalContexts?: number;
  config?: Partial<SealConfig>;
}

export async function runStorySeal(runDir: string, variant: StoryRunVariant = {}) {
  const modelDir = join(sharedDir, 'models/tinystories-656k');
  return runSeal({
    runDir, modelDir, tokenizer: await TextTokenizer.load(modelDir), domain: storyDomain,
    trainContexts: storyContexts('train', variant.trainContexts ?? 5, 0), evalContexts: storyContexts('eval', variant.evalContexts ?? 3, 3),
    config: { ...STORY_CONFIG, ...variant.config },
  });
}

if (process.argv[1]?.endsWith('story-seal-run.ts')) {
  const dir = process.argv[2];
  if (!dir) throw new Error('usage: story-seal-run.ts RUN_DIR');
  await runStorySeal(dir);
}
