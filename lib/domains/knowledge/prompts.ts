// Prompt texts of SEAL's knowledge-incorporation domain, as pure functions.
//
// Every template marked "verbatim" is an EXPERIMENTAL PARAMETER of the reference
// (seal-method.md §1.2, §1.5, §1.6): a changed space or newline changes what the model sees and
// therefore the numbers, so they are spelled out character for character and snapshot-tested
// (test/knowledge-data.test.ts). `{title}`/`{context}` are inserted as stored, without stripping,
// exactly like Python's `str.format` in the reference.

import { pyStrip } from './py-text.js';

/** Minimal shape of a passage the prompts need (a SquadPassage satisfies it). */
export interface PassageText {
  title: string;
  context: string;
}

/** One chat turn, in the shape chat templates and chat-completion APIs take. */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/** The self-edit prompt keys of the reference (`--prompt_key`, default "implications"). */
export const SELF_EDIT_VARIANTS = [
  'implications',
  'implications-long',
  'implications-very-long',
  'rewrite',
  'self-qa',
] as const;
export type SelfEditVariant = (typeof SELF_EDIT_VARIANTS)[number];

/** The reference's default and main SEAL prompt (§1.2). */
export const DEFAULT_SELF_EDIT_VARIANT: SelfEditVariant = 'implications';

export function isSelfEditVariant(value: string): value is SelfEditVariant {
  return (SELF_EDIT_VARIANTS as readonly string[]).includes(value);
}

// §1.2, verbatim. The instruction line is the only part that differs between the implications
// variants; the passage block and the trailing header are shared.
const SELF_EDIT_INSTRUCTIONS: Record<SelfEditVariant, string> = {
  implications:
    "Let's read the following passage and produce a list of implications derived directly or indirectly from the content.",
  'implications-long':
    "Let's read the following passage and produce a long list of implications derived directly or indirectly from the content.",
  'implications-very-long':
    "Let's read the following passage and produce a very long list of implications derived directly or indirectly from the content.",
  rewrite:
    "Let's read the following passage and rewrite it in a few different ways, each one separated by a newline.",
  'self-qa': "Let's read the following passage and rewrite it in a question-answer format.",
};

// §1.2: the header the completion continues from. "self-qa" ends with "Question 1: " (one
// trailing space) — the model writes the first question's text directly, which is why
// build_train_sequences restores the "Question 1: " prefix (§1.3, self-edit-split.ts).
const SELF_EDIT_HEADERS: Record<SelfEditVariant, string> = {
  implications: 'Implications:\n',
  'implications-long': 'Implications:\n',
  'implications-very-long': 'Implications:\n',
  rewrite: 'Rewritten passages:\n',
  'self-qa': 'Question 1: ',
};

/**
 * Base-model self-edit prompt (plain text completion, no chat template), verbatim from the
 * reference `MAKE_SQUAD_DATA_TEMPLATES_BASE[variant]` (§1.2):
 * `{instruction}\n\nPassage:\n{title}\n{context}\n\n{header}`.
 * This is the form every reported SEAL run used (the policy is the base Qwen2.5-7B).
 */
export function selfEditPrompt(variant: SelfEditVariant, passage: PassageText): string {
  const instruction = SELF_EDIT_INSTRUCTIONS[variant];
  if (instruction === undefined) {
    throw new Error(
      `unknown self-edit prompt variant ${JSON.stringify(variant)}; expected one of ${SELF_EDIT_VARIANTS.join(', ')}`,
    );
  }
  return `${instruction}\n\nPassage:\n${passage.title}\n${passage.context}\n\n${SELF_EDIT_HEADERS[variant]}`;
}

/**
 * System turn of the reference's instruct-model self-edit prompt (§1.2), verbatim, including
 * its trailing space.
 */
export const SELF_EDIT_INSTRUCT_SYSTEM =
  'You are an assistant tasked with analyzing the provided passage and producing a list of implications derived directly or indirectly from the content. ';

/**
 * Instruct/chat form of the self-edit prompt as messages (§1.2, flag `--instruct_model`, unused
 * in the reported runs). The reference has a single instruct template: with `--instruct_model`
 * the prompt key is ignored, so there is no instruct form of rewrite/self-qa — this function
 * takes no variant on purpose. Render it with the model's own chat template.
 */
export function selfEditChatMessages(passage: PassageText): ChatMessage[] {
  return [
    { role: 'system', content: SELF_EDIT_INSTRUCT_SYSTEM },
    { role: 'user', content: `${passage.title}\n${passage.context}` },
  ];
}

/**
 * The same instruct prompt as the exact ChatML string the reference sends to a Qwen model
 * (`MAKE_SQUAD_DATA_TEMPLATE_INSTRUCT`): system turn, user turn, then the open assistant header.
 */
export function selfEditPromptChatML(passage: PassageText): string {
  return chatML(selfEditChatMessages(passage));
}

/** ChatML rendering as the reference's hand-written Qwen templates do it (no default system). */
function chatML(messages: readonly ChatMessage[]): string {
  let out = '';
  for (const m of messages) out += `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`;
  return `${out}<|im_start|>assistant\n`;
}

/**
 * The question as the reference asks it: `"Topic: {title}\n{question}"` (§1.5). The same
 * Topic-prefixed text is what the grader sees as `{question}` (§1.6).
 */
export function topicQuestion(title: string, question: string): string {
  return `Topic: ${title}\n${question}`;
}

/**
 * Closed-book answer prompt for a base model, verbatim (`SQUAD_ANSWER_TEMPLATE_BASE`, §1.5):
 * `Let's answer a question directly and concisely.\nQuestion: {question}\nAnswer:\n`, with the
 * Topic-prefixed question. The passage is never in this prompt: the knowledge must come from
 * the weights. Decoding in the reference: greedy, max 64 tokens, stop at EOS only.
 */
export function closedBookQaPrompt(title: string, question: string): string {
  return `Let's answer a question directly and concisely.\nQuestion: ${topicQuestion(title, question)}\nAnswer:\n`;
}

/** System turn of the reference's (unused) instruct answer template (§1.5). */
export const QA_INSTRUCT_SYSTEM = 'You are an assistant to answer a question directly and concisely.';

/**
 * Instruct/chat form of the closed-book answer prompt (`SQUAD_ANSWER_TEMPLATE_QWEN_INSTRUCT`,
 * present in the reference but unused, §1.5): the system turn above and the Topic-prefixed
 * question as the user turn.
 */
export function closedBookQaChatMessages(title: string, question: string): ChatMessage[] {
  return [
    { role: 'system', content: QA_INSTRUCT_SYSTEM },
    { role: 'user', content: topicQuestion(title, question) },
  ];
}

/** The instruct answer prompt as the exact ChatML string of the reference template. */
export function closedBookQaPromptChatML(title: string, question: string): string {
  return chatML(closedBookQaChatMessages(title, question));
}

/**
 * Passage-in-context ("open-book") answer prompt. NOT from the reference, which never shows the
 * passage at question time (§1.5); sealkit adds it as an upper-bound check of what the model can
 * answer when the passage is simply in its context. It is the closed-book prompt with the
 * passage block of the self-edit prompts (`Passage:\n{title}\n{context}\n\n`, §1.2) inserted
 * after the instruction, so the two prompts differ only by the passage.
 */
export function passageInContextQaPrompt(passage: PassageText, question: string): string {
  return (
    "Let's answer a question directly and concisely.\n" +
    `Passage:\n${passage.title}\n${passage.context}\n\n` +
    `Question: ${topicQuestion(passage.title, question)}\nAnswer:\n`
  );
}

/** What the grader compares. `question` is the question exactly as asked (Topic-prefixed, §1.6). */
export interface GradeInput {
  question: string;
  gold: string;
  prediction: string;
}

/**
 * The LLM-judge yes/no prompt, verbatim (`SQUAD_GRADE_TEMPLATE`, §1.6). The prediction is
 * inserted Python-stripped, as the reference formats `pred=p.strip()`. The reference sends this
 * as the single `input` of the Responses API (or one user message on its Chat-Completions
 * fallback), so there is no system turn.
 */
export function judgePrompt(input: GradeInput): string {
  return (
    "You are a grading assistant. Your job is to determine whether a student's answer correctly answers the question based solely on the provided gold answer. " +
    'Do not use any outside knowledge. The student answer can include additional information, but it must at least fully convey the gold answer and must not contradict it. ' +
    "Ignore style, phrasing, or extra details that do not affect correctness. Respond ONLY with 'yes' or 'no'.\n\n" +
    `Question: ${input.question}\nGold answer: ${input.gold}\nStudent answer: ${pyStrip(input.prediction)}\n` +
    "Is the student answer correct based solely on the gold answer? Respond 'yes' or 'no'."
  );
}

/** The judge prompt as a chat (one user turn), as the reference's Chat-Completions call sends it. */
export function judgeChatMessages(input: GradeInput): ChatMessage[] {
  return [{ role: 'user', content: judgePrompt(input) }];
}
