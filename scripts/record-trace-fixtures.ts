/**
 * Records the webview tests' trace fixtures (test/fixtures/trace-*.json) with the engine on the
 * embedded model: `node --import tsx scripts/record-trace-fixtures.ts`. Real engine output, so
 * the panel is tested on what the engine sends (scores, standard errors, quality verdict).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadModel } from '../engine/model/load.js';
import { parseMarkedPrompt, trace } from '../engine/trace/index.js';

const FIXTURES: Array<[file: string, marked: string]> = [
  ['trace-france.json', 'The capital of [France] is'],
  ['trace-alafield.json', 'The headquarters of [Alafield] is in'],
  // A misspelt fact the model does not know: the quality verdict says the trace shows nothing.
  ['trace-frnace.json', 'The captial of [Frnace] is'],
];

async function main(): Promise<void> {
  const model = await loadModel({});
  for (const [file, marked] of FIXTURES) {
    const { prompt, subject } = parseMarkedPrompt(marked);
    const r = await trace(model, prompt, { subject: subject!, samples: 10, seed: 1 });
    fs.writeFileSync(path.join(__dirname, '..', 'test', 'fixtures', file), JSON.stringify(r, null, 2) + '\n');
    process.stderr.write(`${file}: answer ${JSON.stringify(r.answer.token)}, quality ${r.quality.verdict}\n`);
  }
}

void main();
