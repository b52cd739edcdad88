// Knowledge-incorporation data layer: SQuAD metrics, prompts, self-edit splitting, the SQuAD
// loader and the evaluation selection. Expected values are independent of the code under test:
// metric cases are the output of the official SQuAD v1.1 script (Python), split cases the output
// of a Python transcription of the reference's build_train_sequences (seal-method.md §1.3),
// prompts are spelled out from the reference's verbatim boxes (§1.2, §1.5, §1.6), and the
// evaluation indices are parsed from the reference's Appendix A text.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { exactMatch, f1Score, normalizeAnswer, passageMeanAccuracy, questionAccuracy, summarizeAccuracy } from '../lib/domains/knowledge/squad-metrics.js';
import {
  SELF_EDIT_VARIANTS,
  closedBookQaChatMessages,
  closedBookQaPrompt,
  closedBookQaPromptChatML,
  isSelfEditVariant,
  judgeChatMessages,
  judgePrompt,
  passageInContextQaPrompt,
  selfEditChatMessages,
  selfEditPrompt,
  selfEditPromptChatML,
  topicQuestion,
  type SelfEditVariant,
} from '../lib/domains/knowledge/prompts.js';
import { buildTrainSequences, splitSelfEdit } from '../lib/domains/knowledge/self-edit-split.js';
import { SquadDataError, countQuestions, loadSquadFile, parseSquadJson, type SquadPassage } from '../lib/domains/knowledge/squad-data.js';
import { EVAL_PASSAGE_INDICES, EVAL_QUESTION_COUNT, selectEvalPassages } from '../lib/domains/knowledge/eval-selection.js';

// ---------------------------------------------------------------- SQuAD v1.1 metrics

// [prediction, golds, normalize_answer(prediction), max EM, max F1] — from evaluate-v1.1.py.
const OFFICIAL: [string, string[], string, boolean, number][] = [
  ['The Quick, Brown fox!', ['quick brown fox'], 'quick brown fox', true, 1],
  ['An apple a day', ['apple day'], 'apple day', true, 1],
  ['the theater', ['theater'], 'theater', true, 1], // "the" inside a word stays
  ['Denver Broncos.', ['Denver Broncos'], 'denver broncos', true, 1],
  ['It was the Denver Broncos who won', ['Denver Broncos'], 'it was denver broncos who won', false, 0.5],
  ['', [''], '', true, 0], // v1.1: EM of two empties is 1, F1 is 0
  ['', ['Denver'], '', false, 0],
  ['the', ['a'], '', true, 0], // articles only → both empty
  ['cat cat', ['cat'], 'cat cat', false, 2 / 3], // Counter intersection, not set overlap
  ['the cat sat', ['cat sat on the mat'], 'cat sat', false, 2 / 3],
  ['Santa Clara, California', ["Levi's Stadium", 'Santa Clara, California', 'Santa Clara'], 'santa clara california', true, 1],
  ['levis stadium', ["Levi's Stadium"], 'levis stadium', true, 1], // apostrophe removed, not split
  ['éthe café', ['café'], 'éthe café', false, 2 / 3], // Unicode \b: no article inside "éthe"
  ['Smith–Jones', ['Smith Jones'], 'smith–jones', false, 0], // en dash is not string.punctuation
  ['  multiple\t\nspaces\u00a0here ', ['multiple spaces here'], 'multiple spaces here', true, 1],
  ['A.D. 1066', ['1066 AD'], 'ad 1066', false, 1],
  ['the_the a-an', ['the_the'], 'thethe aan', false, 2 / 3], // punctuation goes first
  ['ÉCOLE Normale', ['école normale'], 'école normale', true, 1],
  ['1,000 people', ['1000 people'], '1000 people', true, 1],
  ['He said “no”', ['he said no'], 'he said “no”', false, 2 / 3],
];

test('SQuAD v1.1 normalisation, EM and F1 match the official script', () => {
  for (const [pred, golds, norm, em, f1] of OFFICIAL) {
    assert.is(normalizeAnswer(pred), norm, `normalize(${JSON.stringify(pred)})`);
    assert.is(exactMatch(pred, golds), em, `EM(${JSON.stringify(pred)})`);
    assert.ok(Math.abs(f1Score(pred, golds) - f1) < 1e-12, `F1(${JSON.stringify(pred)}) = ${f1Score(pred, golds)}, want ${f1}`);
  }
});

test('SQuAD metrics: a single gold string, max over golds, no golds is an error', () => {
  assert.is(exactMatch('Denver Broncos', 'the denver broncos'), true);
  assert.is(f1Score('Broncos', ['Denver Broncos', 'Broncos']), 1);
  assert.ok(Math.abs(f1Score('Broncos', ['Denver Broncos']) - 2 / 3) < 1e-12);
  assert.throws(() => exactMatch('x', []), /no gold answers/);
  assert.throws(() => f1Score('x', []), /no gold answers/);
});

test('accuracy: passage-mean (macro, the reference) vs per-question (micro)', () => {
  const verdicts = [[true, false], [true], [false, false, false, true]];
  const s = summarizeAccuracy(verdicts);
  assert.ok(Math.abs(s.macro - (0.5 + 1 + 0.25) / 3) < 1e-12);
  assert.ok(Math.abs(s.micro - 3 / 7) < 1e-12);
  assert.equal([s.passages, s.questions, s.correct], [3, 7, 3]);
  assert.is(passageMeanAccuracy(verdicts), s.macro);
  assert.is(questionAccuracy(verdicts), s.micro);
  assert.throws(() => summarizeAccuracy([]), /no passages/);
  assert.throws(() => summarizeAccuracy([[true], []]), /passage 1 has no graded questions/);
});

// ---------------------------------------------------------------- prompts

const P = { title: 'Super Bowl 50', context: 'Super Bowl 50 was an American football game.' };

const SELF_EDIT_SNAPSHOTS: Record<SelfEditVariant, string> = {
  implications:
    "Let's read the following passage and produce a list of implications derived directly or indirectly from the content.\n\nPassage:\nSuper Bowl 50\nSuper Bowl 50 was an American football game.\n\nImplications:\n",
  'implications-long':
    "Let's read the following passage and produce a long list of implications derived directly or indirectly from the content.\n\nPassage:\nSuper Bowl 50\nSuper Bowl 50 was an American football game.\n\nImplications:\n",
  'implications-very-long':
    "Let's read the following passage and produce a very long list of implications derived directly or indirectly from the content.\n\nPassage:\nSuper Bowl 50\nSuper Bowl 50 was an American football game.\n\nImplications:\n",
  rewrite:
    "Let's read the following passage and rewrite it in a few different ways, each one separated by a newline.\n\nPassage:\nSuper Bowl 50\nSuper Bowl 50 was an American football game.\n\nRewritten passages:\n",
  'self-qa':
    "Let's read the following passage and rewrite it in a question-answer format.\n\nPassage:\nSuper Bowl 50\nSuper Bowl 50 was an American football game.\n\nQuestion 1: ",
};

test('self-edit prompts: every base-model variant, verbatim', () => {
  assert.equal([...SELF_EDIT_VARIANTS], Object.keys(SELF_EDIT_SNAPSHOTS));
  for (const v of SELF_EDIT_VARIANTS) assert.is(selfEditPrompt(v, P), SELF_EDIT_SNAPSHOTS[v], v);
  // Fields are inserted as stored (Python str.format): no stripping.
  assert.ok(selfEditPrompt('implications', { title: ' T ', context: 'C\n' }).includes('Passage:\n T \nC\n\n\nImplications:\n'));
  assert.ok(isSelfEditVariant('rewrite'));
  assert.not.ok(isSelfEditVariant('summary'));
  assert.throws(() => selfEditPrompt('summary' as SelfEditVariant, P), /unknown self-edit prompt variant "summary"/);
});

test('self-edit prompts: instruct form (messages and the reference ChatML string)', () => {
  const system =
    'You are an assistant tasked with analyzing the provided passage and producing a list of implications derived directly or indirectly from the content. ';
  assert.equal(selfEditChatMessages(P), [
    { role: 'system', content: system },
    { role: 'user', content: 'Super Bowl 50\nSuper Bowl 50 was an American football game.' },
  ]);
  assert.is(
    selfEditPromptChatML(P),
    '<|im_start|>system\nYou are an assistant tasked with analyzing the provided passage and producing a list of implications derived directly or indirectly from the content. <|im_end|>\n' +
      '<|im_start|>user\nSuper Bowl 50\nSuper Bowl 50 was an American football game.<|im_end|>\n' +
      '<|im_start|>assistant\n',
  );
});

test('QA prompts: closed-book (base and instruct) and passage-in-context', () => {
  const q = 'Which NFL team won Super Bowl 50?';
  assert.is(topicQuestion('Super Bowl 50', q), 'Topic: Super Bowl 50\nWhich NFL team won Super Bowl 50?');
  assert.is(
    closedBookQaPrompt('Super Bowl 50', q),
    "Let's answer a question directly and concisely.\nQuestion: Topic: Super Bowl 50\nWhich NFL team won Super Bowl 50?\nAnswer:\n",
  );
  assert.equal(closedBookQaChatMessages('Super Bowl 50', q), [
    { role: 'system', content: 'You are an assistant to answer a question directly and concisely.' },
    { role: 'user', content: 'Topic: Super Bowl 50\nWhich NFL team won Super Bowl 50?' },
  ]);
  assert.is(
    closedBookQaPromptChatML('Super Bowl 50', q),
    '<|im_start|>system\nYou are an assistant to answer a question directly and concisely.<|im_end|>\n' +
      '<|im_start|>user\nTopic: Super Bowl 50\nWhich NFL team won Super Bowl 50?<|im_end|>\n<|im_start|>assistant\n',
  );
  assert.is(
    passageInContextQaPrompt(P, q),
    "Let's answer a question directly and concisely.\nPassage:\nSuper Bowl 50\nSuper Bowl 50 was an American football game.\n\n" +
      'Question: Topic: Super Bowl 50\nWhich NFL team won Super Bowl 50?\nAnswer:\n',
  );
});

test('judge prompt: verbatim, prediction stripped, one user message', () => {
  const input = { question: 'Topic: Super Bowl 50\nWho won?', gold: 'Denver Broncos', prediction: '  The Broncos won.\n' };
  const expected =
    "You are a grading assistant. Your job is to determine whether a student's answer correctly answers the question based solely on the provided gold answer. Do not use any outside knowledge. The student answer can include additional information, but it must at least fully convey the gold answer and must not contradict it. Ignore style, phrasing, or extra details that do not affect correctness. Respond ONLY with 'yes' or 'no'.\n\n" +
    'Question: Topic: Super Bowl 50\nWho won?\nGold answer: Denver Broncos\nStudent answer: The Broncos won.\n' +
    "Is the student answer correct based solely on the gold answer? Respond 'yes' or 'no'.";
  assert.is(judgePrompt(input), expected);
  assert.equal(judgeChatMessages(input), [{ role: 'user', content: expected }]);
});

// ---------------------------------------------------------------- self-edit splitting

const PASSAGE = { title: 'T', context: ' The passage. \n' };
// [completion, with split_newlines, without] — from a Python transcription of build_train_sequences.
const SPLITS: [string, string[], string[]][] = [
  ['', ['T\nThe passage.'], ['T\n', 'T\nThe passage.']], // §1.3: 1 vs 2 sequences
  ['   \n\n  ', ['T\nThe passage.'], ['T\n', 'T\nThe passage.']],
  ['1. A is B.\n2. C is D.\n\n3. E.', ['T\n1. A is B.', 'T\n2. C is D.', 'T\n3. E.', 'T\nThe passage.'], ['T\n1. A is B.\n2. C is D.\n\n3. E.', 'T\nThe passage.']],
  // Preamble dropped because the second line starts with "1." (blank lines are gone first).
  ['Sure, here are the implications:\n1. A.\n2. B.', ['T\n1. A.', 'T\n2. B.', 'T\nThe passage.'], ['T\nSure, here are the implications:\n1. A.\n2. B.', 'T\nThe passage.']],
  ['Sure:\n\n1. A.\n2. B.', ['T\n1. A.', 'T\n2. B.', 'T\nThe passage.'], ['T\nSure:\n\n1. A.\n2. B.', 'T\nThe passage.']],
  // Only the SECOND line is looked at.
  ['Intro\nSecond line\n1. Third', ['T\nIntro', 'T\nSecond line', 'T\n1. Third', 'T\nThe passage.'], ['T\nIntro\nSecond line\n1. Third', 'T\nThe passage.']],
  // ...even when the first line is itself item 1.
  ['1. one\n1. one again', ['T\n1. one again', 'T\nThe passage.'], ['T\n1. one\n1. one again', 'T\nThe passage.']],
  // "---" separates pieces; empty pieces vanish; \r\n is one line break.
  ['A\n---\nB\n---\n\n---C\r\nD', ['T\nA', 'T\nB', 'T\nC', 'T\nD', 'T\nThe passage.'], ['T\nA', 'T\nB', 'T\nC\r\nD', 'T\nThe passage.']],
  ['first --- second --- third', ['T\nfirst', 'T\nsecond', 'T\nthird', 'T\nThe passage.'], ['T\nfirst', 'T\nsecond', 'T\nthird', 'T\nThe passage.']],
  // Nothing but a separator: the stripped whole completion is kept.
  ['---', ['T\n---', 'T\nThe passage.'], ['T\n---', 'T\nThe passage.']],
  // Python splitlines(): U+2028, U+0085, \v break lines; \x1f does not.
  ['x\u2028y\u0085z\u000bw\u001fv', ['T\nx', 'T\ny', 'T\nz', 'T\nw\u001fv', 'T\nThe passage.'], ['T\nx\u2028y\u0085z\u000bw\u001fv', 'T\nThe passage.']],
  ['  leading\tspaces  \n\ttabs\t', ['T\nleading\tspaces', 'T\ntabs', 'T\nThe passage.'], ['T\nleading\tspaces  \n\ttabs', 'T\nThe passage.']],
  ['Rewrite one.\nRewrite two.\n\nRewrite three.', ['T\nRewrite one.', 'T\nRewrite two.', 'T\nRewrite three.', 'T\nThe passage.'], ['T\nRewrite one.\nRewrite two.\n\nRewrite three.', 'T\nThe passage.']],
  ['Line\n\n\n', ['T\nLine', 'T\nThe passage.'], ['T\nLine', 'T\nThe passage.']],
  // Self-QA: "Question 1: " restored; cut before each "Question N:"; pieces keep a trailing "\n".
  [
    'Who built it?\nAnswer: Bob.\nQuestion 2: When?\nAnswer: 1900.\n\nQuestion 3: Where?\nAnswer: Paris.',
    ['T\nQuestion 1: Who built it?\nAnswer: Bob.', 'T\nQuestion 2: When?\nAnswer: 1900.\n', 'T\nQuestion 3: Where?\nAnswer: Paris.', 'T\nThe passage.'],
    ['T\nWho built it?\nAnswer: Bob.\nQuestion 2: When?\nAnswer: 1900.\n\nQuestion 3: Where?\nAnswer: Paris.', 'T\nThe passage.'],
  ],
  ['Question 1: Who? Answer: Bob', ['T\nQuestion 1: Who? Answer: Bob', 'T\nThe passage.'], ['T\nQuestion 1: Who? Answer: Bob', 'T\nThe passage.']],
  // Questions without any "Answer:" are not self-QA: plain lines.
  ['Question 1: only a question\nQuestion 2: another', ['T\nQuestion 1: only a question', 'T\nQuestion 2: another', 'T\nThe passage.'], ['T\nQuestion 1: only a question\nQuestion 2: another', 'T\nThe passage.']],
];

test('build_train_sequences: the reference rules, with and without split_newlines', () => {
  for (const [completion, split, plain] of SPLITS) {
    assert.equal(buildTrainSequences(completion, PASSAGE), split, `split ${JSON.stringify(completion)}`);
    assert.equal(buildTrainSequences(completion, PASSAGE, { splitNewlines: true }), split);
    assert.equal(buildTrainSequences(completion, PASSAGE, { splitNewlines: false }), plain, `plain ${JSON.stringify(completion)}`);
  }
});

test('splitSelfEdit reports the mode and keeps the passage out', () => {
  assert.equal(splitSelfEdit('a\nb'), { mode: 'lines', pieces: ['a', 'b'] });
  assert.equal(splitSelfEdit('a\nb', { splitNewlines: false }), { mode: 'segments', pieces: ['a\nb'] });
  assert.equal(splitSelfEdit('Question 1: q\nAnswer: a'), { mode: 'self-qa', pieces: ['Question 1: q\nAnswer: a'] });
  // Self-QA detection is case-sensitive and looks at the raw completion (Unicode digits count).
  assert.is(splitSelfEdit('question 1: q\nanswer: a').mode, 'lines');
  assert.is(splitSelfEdit('Question ٣: q\nAnswer: a').mode, 'self-qa');
});

// ---------------------------------------------------------------- loader

function loaderError(text: string, label = 'squad_val.json'): string {
  try {
    parseSquadJson(text, label);
  } catch (err) {
    assert.instance(err, SquadDataError);
    return (err as Error).message;
  }
  throw new Error('expected a SquadDataError');
}

const GOOD = { title: 'T', context: 'C', questions: [{ question: 'q?', answer: 'a' }] };

test('loader: valid records, stable ids, extra keys ignored', () => {
  const passages = parseSquadJson(JSON.stringify([GOOD, { ...GOOD, title: 'U', completions: ['x'], prompt: 'p' }]), 'f.json');
  assert.equal(passages, [
    { id: 0, title: 'T', context: 'C', questions: [{ question: 'q?', answer: 'a' }] },
    { id: 1, title: 'U', context: 'C', questions: [{ question: 'q?', answer: 'a' }] },
  ]);
  assert.is(countQuestions(passages), 2);
  assert.equal(parseSquadJson('\ufeff[]', 'bom.json'), []);
});

test('loader: malformed files name the file, passage and field', () => {
  assert.match(loaderError('{"title": '), /^squad_val\.json: not valid JSON: /);
  assert.match(loaderError(''), /^squad_val\.json: not valid JSON/);
  assert.is(loaderError('{"data": []}'), 'squad_val.json: expected a JSON array of passages {title, context, questions}, got object');
  assert.is(loaderError('"x"'), 'squad_val.json: expected a JSON array of passages {title, context, questions}, got string');

  const records: unknown[] = Array.from({ length: 18 }, () => GOOD);
  records[17] = { ...GOOD, questions: [GOOD.questions[0], GOOD.questions[0], GOOD.questions[0], { question: 'q', answer: 3 }] };
  assert.is(loaderError(JSON.stringify(records)), 'squad_val.json: passage 17: questions[3].answer: expected a string, got number');

  assert.is(loaderError(JSON.stringify([GOOD, { context: 'C', questions: [] }])), 'squad_val.json: passage 1: title: missing (expected a string)');
  assert.is(loaderError(JSON.stringify([{ ...GOOD, context: '' }])), 'squad_val.json: passage 0: context: expected a non-empty string');
  assert.is(loaderError(JSON.stringify([{ ...GOOD, questions: 'q' }])), 'squad_val.json: passage 0: questions: expected an array of {question, answer}, got string');
  assert.is(loaderError(JSON.stringify([{ ...GOOD, questions: [null] }])), 'squad_val.json: passage 0: questions[0]: expected an object {question, answer}, got null');
  assert.is(loaderError(JSON.stringify([{ ...GOOD, questions: [{ answer: 'a' }] }])), 'squad_val.json: passage 0: questions[0].question: missing (expected a string)');
  assert.is(loaderError(JSON.stringify([GOOD, [1, 2]])), 'squad_val.json: passage 1: expected an object {title, context, questions}, got an array');

  // Several problems are all listed; a flood is capped.
  const many = loaderError(JSON.stringify([{ title: 1, context: 2, questions: 3 }]));
  assert.is(many.split('\n').length, 3);
  const flood = loaderError(JSON.stringify(Array.from({ length: 30 }, () => ({}))));
  assert.match(flood, /\(and 80 more problems\)$/);
});

test('loader: files on disk (error names the path; missing file)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sealkit-squad-'));
  try {
    const bad = join(dir, 'squad_bad.json');
    writeFileSync(bad, JSON.stringify([GOOD, { ...GOOD, title: null }]));
    try {
      await loadSquadFile(bad);
      assert.unreachable('should have thrown');
    } catch (err) {
      assert.is((err as Error).message, `${bad}: passage 1: title: expected a string, got null`);
    }
    const good = join(dir, 'squad_good.json');
    writeFileSync(good, JSON.stringify([GOOD]));
    assert.is((await loadSquadFile(pathToFileURL(good))).length, 1);
    try {
      await loadSquadFile(join(dir, 'absent.json'));
      assert.unreachable('should have thrown');
    } catch (err) {
      assert.match((err as Error).message, /absent\.json: cannot read: .*ENOENT/);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------- real data (../shared)

const SHARED_VAL = new URL('../../shared/data/seal-knowledge/squad_val.json', import.meta.url);
const SHARED_TRAIN = new URL('../../shared/data/seal-knowledge/squad_train.json', import.meta.url);
const SHARED_METHOD = new URL('../../shared/reference/seal-method.md', import.meta.url);
const haveShared = existsSync(fileURLToPath(SHARED_VAL));

/** The 200 indices as printed in the reference's Appendix A (independent of eval-passages.json). */
function appendixAIndices(): number[] | undefined {
  if (!existsSync(fileURLToPath(SHARED_METHOD))) return undefined;
  const doc = readFileSync(SHARED_METHOD, 'utf8');
  const appendix = doc.slice(doc.indexOf('## Appendix A'));
  const block = /first 200\):\n\n([\d,\n]+)\n/.exec(appendix)?.[1];
  return block?.replace(/\n/g, '').split(',').map(Number);
}

if (!haveShared) {
  console.log(`skip: ${fileURLToPath(SHARED_VAL)} is absent (../shared not checked out); real-data loader tests skipped`);
  test.skip('squad_val.json: counts and the evaluation selection');
  test.skip('squad_train.json: counts; refused by the evaluation selection');
} else {
  let val: SquadPassage[] = [];

  test('squad_val.json: counts and the evaluation selection', async () => {
    val = await loadSquadFile(SHARED_VAL);
    assert.is(val.length, 2067);
    assert.is(countQuestions(val), 10570);
    assert.ok(val.every((p, i) => p.id === i));

    const selected = selectEvalPassages(val, { count: 200 });
    assert.equal(selected.map((p) => p.id), [...EVAL_PASSAGE_INDICES]);
    const appendix = appendixAIndices();
    if (appendix === undefined) console.log('skip: seal-method.md absent; eval-passages.json not compared with Appendix A');
    else assert.equal([...EVAL_PASSAGE_INDICES], appendix, 'eval-passages.json must equal Appendix A');
    assert.is(new Set(EVAL_PASSAGE_INDICES).size, 200);
    assert.equal(EVAL_PASSAGE_INDICES.slice(0, 10), [1168, 760, 685, 1193, 1679, 1572, 1257, 522, 137, 2032]);
    assert.is(selected[0]!.title, 'Genghis Khan');
    assert.is(countQuestions(selected), 974);
    assert.is(EVAL_QUESTION_COUNT, 974);

    // A smaller count is the prefix of the evaluation order (the reference's --n).
    assert.equal(selectEvalPassages(val, { count: 5 }).map((p) => p.id), [1168, 760, 685, 1193, 1679]);
    assert.is(selectEvalPassages(val).length, 200);
    assert.throws(() => selectEvalPassages(val, { count: 201 }), /count must be an integer from 1 to 200/);
    assert.throws(() => selectEvalPassages(val, { count: 0 }), /count must be an integer/);
    assert.throws(() => selectEvalPassages(val.slice(0, 2000)), /2067 passages\); got 2000/);
    const reordered = [...val].reverse();
    assert.throws(() => selectEvalPassages(reordered), /should be titled "Genghis Khan"/);
  });

  test('squad_train.json: counts; refused by the evaluation selection', async () => {
    if (!existsSync(fileURLToPath(SHARED_TRAIN))) {
      console.log('skip: squad_train.json absent');
      return;
    }
    const train = await loadSquadFile(SHARED_TRAIN);
    assert.is(train.length, 18891);
    assert.is(countQuestions(train), 87599);
    assert.throws(() => selectEvalPassages(train), /got 18891 passages/);
  });
}

test.run();
