/**
 * Generation entropy (GE, "fluency"; rome-spec §3.4): per text, the weighted mean of the bigram
 * and trigram entropies of its words, GE_text = mean(⅔·H₂, ⁴⁄₃·H₃) = ⅓H₂ + ⅔H₃ in bits, with
 * H_n = −Σ f log₂ f over the relative frequencies f of the text's distinct n-grams (nltk
 * FreqDist). A text with fewer than n words has H_n = 0 (numpy's sum over an empty array).
 * Reported ×100, as the paper (626.6 ⇒ 6.266 bits).
 *
 * Words: `wordTokenize` follows NLTK's `word_tokenize` (the Treebank rules of
 * NLTKWordTokenizer) closely but not exactly. Differences:
 *  - no Punkt sentence splitter: a period is split off a word when whitespace or the end of
 *    the text follows it, unless the word has another period inside ("U.S." stays, as NLTK).
 *    NLTK keeps known abbreviations ("Mr.", "Dr.") whole; here they lose their period. A
 *    period with no space after it ("Salvador.The", common once <|endoftext|> is stripped)
 *    stays inside the word, as NLTK does;
 *  - the quote and contraction rules are NLTK's (`"` → `` / '', "'s", "n't", "'ll", ...,
 *    "cannot" → "can not", "gonna" → "gon na"), but not its rarer ones (e.g. "'tis");
 *  - "word" characters are Unicode letters and digits (NLTK's regexes are also Unicode-aware).
 * For GE only the counts of distinct n-grams matter, so these differences move GE by a few
 * hundredths of a bit at most on model text.
 */

const CONTRACTIONS2 = [
  /\b(can)(not)\b/gi,
  /\b(d)('ye)\b/gi,
  /\b(gim)(me)\b/gi,
  /\b(gon)(na)\b/gi,
  /\b(got)(ta)\b/gi,
  /\b(lem)(me)\b/gi,
  /\b(more)('n)\b/gi,
  /\b(wan)(na)(?=\s)/gi,
];

/** NLTK-word_tokenize-like word splitting (see the module comment for the differences). */
export function wordTokenize(text: string): string[] {
  let s = ` ${text} `;
  // Starting quotes.
  s = s.replace(/([ \u00a0([{<])"/g, '$1 `` ');
  s = s.replace(/(``)/g, ' $1 ');
  // Punctuation.
  s = s.replace(/([:,])([^\d])/g, ' $1 $2');
  s = s.replace(/([:,])$/g, ' $1 ');
  s = s.replace(/\.\.\./g, ' ... ');
  s = s.replace(/[;@#$%&]/g, ' $& ');
  // A period before whitespace ends a sentence, unless the word has an inner period (U.S.).
  s = s.replace(/(\S+?)\.([\])}>"']*)(?=\s)/gu, (m, word: string, closers: string) =>
    word.includes('.') || word.endsWith('.') ? m : `${word} . ${closers}`,
  );
  s = s.replace(/[?!]/g, ' $& ');
  s = s.replace(/[\][(){}<>]/g, ' $& ');
  s = s.replace(/--/g, ' -- ');
  // Ending quotes and contractions.
  s = s.replace(/"/g, " '' ");
  s = s.replace(/(\S)('')/g, '$1 $2 ');
  s = s.replace(/([^' ])('[sS]|'[mM]|'[dD]|') /g, '$1 $2 ');
  s = s.replace(/([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) /g, '$1 $2 ');
  for (const re of CONTRACTIONS2) s = s.replace(re, ' $1 $2 ');
  return s.split(/\s+/).filter((w) => w.length > 0);
}

/** Entropy in bits of the n-gram frequency distribution of `words` (0 with no n-gram). */
export function ngramEntropy(words: string[], n: number): number {
  const counts = new Map<string, number>();
  let total = 0;
  for (let i = 0; i + n <= words.length; i++) {
    const key = words.slice(i, i + n).join('\u0000');
    counts.set(key, (counts.get(key) ?? 0) + 1);
    total++;
  }
  if (total === 0) return 0;
  let h = 0;
  for (const c of counts.values()) {
    const f = c / total;
    h -= f * Math.log2(f);
  }
  return h;
}

export const GE_NS = [2, 3];
export const GE_WEIGHTS = [2 / 3, 4 / 3];

/** GE of one text in bits: mean over n ∈ {2,3} of weight_n · H_n (= ⅓H₂ + ⅔H₃). */
export function textEntropy(text: string): number {
  const words = wordTokenize(text);
  let sum = 0;
  GE_NS.forEach((n, i) => (sum += GE_WEIGHTS[i] * ngramEntropy(words, n)));
  return sum / GE_NS.length;
}

/** Arithmetic mean of textEntropy over texts (the reference's n_gram_entropy, agg "arith"). */
export function generationEntropy(texts: string[]): number {
  if (texts.length === 0) return NaN;
  return texts.reduce((a, t) => a + textEntropy(t), 0) / texts.length;
}
