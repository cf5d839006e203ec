export type { Tokenizer } from './types.js';
export { loadTokenizer } from './load.js';
export { subjectTokenRange, subjectLastIndexInTemplate, type TemplateSubjectIndex } from './subject.js';
