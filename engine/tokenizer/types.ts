/** The tokenizer surface the engine uses (prompts in, token ids out, and back). */
export interface Tokenizer {
  /**
   * Text to token ids. No BOS/EOS is added; literal special tokens in the text
   * (e.g. `<|endoftext|>`) map to their own id, as Hugging Face tokenizers do.
   */
  encode(text: string): number[];
  /**
   * Token ids to text. Special tokens are kept, no "clean up" of spaces is applied, and
   * invalid UTF-8 byte sequences become U+FFFD (as Hugging Face does), so
   * `decode(encode(x)) === x` for any well-formed string.
   * Throws INVALID_ARGUMENT for an id that is not in the vocabulary.
   */
  decode(ids: number[]): string;
  /** Decoded text of one token, e.g. `" Paris"` (a partial UTF-8 sequence gives `"\uFFFD"`). */
  tokenToString(id: number): string;
  /** One more than the largest token id (vocabulary plus added tokens). */
  readonly vocabSize: number;
  /** Id of the end-of-sequence token, or null if the tokenizer has none. */
  readonly eosId: number | null;
  /** Special added tokens: literal text → id (e.g. `"<|endoftext|>"` → 50256). */
  readonly specialTokens: Map<string, number>;
  /**
   * SHA-256 (hex) of everything that decides encode()'s output: the tokenizer library's version
   * and the files' text it was built from. Caches of encodings key on it (encode-cache.ts);
   * absent for tokenizers not loaded from files.
   */
  readonly fingerprint?: string;
}
