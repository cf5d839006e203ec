/**
 * Subjects for a plain-text selection: the spans a user might mean, and a guess.
 *
 * The guess is the first run of capitalised words (a name: "Eiffel Tower", "David Stan",
 * "Alafield X26"), without a sentence-initial article, joined over short connectors
 * ("Bank of America"). Candidates are those runs, their sub-spans, then the other words and
 * word pairs, in order of appearance. Pure functions (no `vscode` import).
 */

export interface SubjectCandidate {
  text: string;
  /** 0-based character offset in the prompt. */
  start: number;
  /** Why it is offered: a name (capitalised run) or a plain word span. */
  kind: 'name' | 'span';
}

export interface SubjectGuess {
  candidates: SubjectCandidate[];
  /** Index into candidates of the guess, or -1 when the text has no word at all. */
  guess: number;
}

/** Selections become one-line prompts: whitespace runs (newlines too) become one space. */
export function normalizeSelection(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

const ARTICLES = new Set(['the', 'a', 'an']);
const CONNECTORS = new Set(['of', 'de', 'da', 'del', 'van', 'von', 'la', 'le', 'and', '&']);
const STOP = new Set([
  ...ARTICLES,
  ...CONNECTORS,
  'is', 'was', 'are', 'were', 'be', 'in', 'on', 'at', 'to', 'by', 'for', 'from', 'with', 'as', 'it', 'its', 'this', 'that',
  'which', 'who', 'what', 'where', 'when', 'has', 'had', 'have', 'does', 'did', 'do', 'not', 'or', 'but', 'than', 'into',
]);

interface Word {
  text: string;
  start: number;
  end: number;
}

function words(text: string): Word[] {
  const out: Word[] = [];
  const re = /[\p{L}\p{N}][\p{L}\p{N}'’.\-]*[\p{L}\p{N}]|[\p{L}\p{N}]/gu;
  for (let m = re.exec(text); m; m = re.exec(text)) out.push({ text: m[0], start: m.index, end: m.index + m[0].length });
  return out;
}

const isName = (w: string) => /^[\p{Lu}\p{N}]/u.test(w) && !/^\p{N}+$/u.test(w);

/** Candidate subjects of a prompt and the index of the guess. */
export function subjectCandidates(prompt: string, maxCandidates = 40): SubjectGuess {
  const ws = words(prompt);
  const seen = new Set<string>();
  const names: SubjectCandidate[] = [];
  const spans: SubjectCandidate[] = [];
  const add = (list: SubjectCandidate[], a: number, b: number, kind: SubjectCandidate['kind']) => {
    const text = prompt.slice(ws[a].start, ws[b].end);
    if (seen.has(text)) return;
    seen.add(text);
    list.push({ text, start: ws[a].start, kind });
  };

  // Runs of capitalised words, allowing lower-case connectors between two of them.
  const runs: Array<[number, number]> = [];
  for (let i = 0; i < ws.length; ) {
    if (!isName(ws[i].text)) {
      i++;
      continue;
    }
    let j = i;
    while (j + 1 < ws.length) {
      if (isName(ws[j + 1].text)) j++;
      else if (CONNECTORS.has(ws[j + 1].text.toLowerCase()) && j + 2 < ws.length && isName(ws[j + 2].text)) j += 2;
      else break;
    }
    let a = i;
    // Drop leading articles and other function words ("The Eiffel Tower" → "Eiffel Tower",
    // "Where" at the start of a question is no name).
    while (a <= j && STOP.has(ws[a].text.toLowerCase())) a++;
    if (a <= j) runs.push([a, j]);
    i = j + 1;
  }
  for (const [a, b] of runs) {
    add(names, a, b, 'name');
    for (let len = b - a; len >= 1; len--) {
      for (let s = a; s + len - 1 <= b; s++) {
        const e = s + len - 1;
        if (CONNECTORS.has(ws[s].text.toLowerCase()) || CONNECTORS.has(ws[e].text.toLowerCase())) continue;
        add(names, s, e, 'name');
      }
    }
  }
  // Then content words, and pairs and triples of words that do not start or end on a stop word.
  for (let i = 0; i < ws.length; i++) if (!STOP.has(ws[i].text.toLowerCase())) add(spans, i, i, 'span');
  for (let len = 2; len <= 3; len++) {
    for (let i = 0; i + len - 1 < ws.length; i++) {
      const e = i + len - 1;
      if (STOP.has(ws[i].text.toLowerCase()) || STOP.has(ws[e].text.toLowerCase())) continue;
      add(spans, i, e, 'span');
    }
  }
  const candidates = [...names, ...spans].slice(0, maxCandidates);
  if (candidates.length === 0 && ws.length > 0) {
    candidates.push({ text: ws[0].text, start: ws[0].start, kind: 'span' });
  }
  return { candidates, guess: candidates.length ? 0 : -1 };
}
