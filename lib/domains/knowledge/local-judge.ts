// An LLM judge running on a local model through the engine: the reference's yes/no grading prompt
// (chat-formatted when the model has a chat template), greedy, a few tokens, parsed like the
// reference's verdicts. Empty predictions are incorrect without asking.
import type { Model } from '../../model/model.js';
import type { TextTokenizer } from '../../model/tokenizer.js';
import { parseYesNo, type Judge, type JudgeItem } from './judges.js';
import { judgePrompt } from './prompts.js';
import { pyStrip } from './py-text.js';

export class LocalModelJudge implements Judge {
  private readonly model: Model;
  private readonly tok: TextTokenizer;

  constructor(model: Model, tokenizer: TextTokenizer) {
    this.model = model;
    this.tok = tokenizer;
  }

  async grade(items: readonly JudgeItem[]): Promise<boolean[]> {
    const asked = items.map((item, i) => ({ item, i })).filter(({ item }) => pyStrip(item.prediction) !== '');
    const verdicts = items.map(() => false);
    if (asked.length === 0) return verdicts;
    const prompts = asked.map(({ item }) => {
      const text = judgePrompt(item);
      return { tokens: this.tok.hasChatTemplate ? this.tok.encodeChat([{ role: 'user', content: text }], { addGenerationPrompt: true }) : this.tok.encode(`${text}\n`) };
    });
    const out = await this.model.generate(prompts, { maxNewTokens: 4, tokenizer: this.tok });
    out.forEach((c) => { verdicts[asked[c.prompt]!.i] = parseYesNo(c.text ?? '') === 'yes'; });
    return verdicts;
  }
}
