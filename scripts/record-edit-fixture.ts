/**
 * Records real edit results for the edit view's component test (test/edit-view.test.ts): runs
 * the engine (engine/server/main.ts through the client), measures the unedited model
 * (edit/probe unedited), computes a default ROME edit, measures again, and writes the diff the
 * extension would show to test/fixtures/edit-<name>.json. Run again after changing what the
 * engine reports:
 *
 *   node --import tsx scripts/record-edit-fixture.ts
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { EngineClient } from '../engine/client/index.js';
import { EditApply, EditProbe, EditRevert, ModelLoad, type EditRequest } from '../engine/protocol.js';
import type { EditDiff, PromptKind } from '../webviews/edit/protocol.js';

const ROOT = path.resolve(__dirname, '..');

const CASES: Array<{ name: string; request: EditRequest; paraphrases?: string[]; neighborhood?: string[] }> = [
  {
    name: 'france-rome',
    request: { prompt: 'The capital of {} is', subject: 'France', target: 'Rome', targetTrue: 'Paris' },
    neighborhood: ['The capital of Germany is', 'The capital of Japan is'],
  },
  // With the default (consistent) formula this edit does not take: k·u ratio ≈ 0.14 (README, CounterFact analysis).
  { name: 'lyon-portugal', request: { prompt: '{} is located in the country of', subject: 'Lyon', target: 'Portugal', targetTrue: 'France' } },
];

async function main(): Promise<void> {
  const client = await EngineClient.spawn({
    enginePath: path.join(ROOT, 'engine', 'server', 'main.ts'),
    execArgv: ['--import', 'tsx'],
    cwd: ROOT,
    clientName: 'record-edit-fixture',
    handshakeTimeoutMs: 180_000,
  });
  try {
    const model = await client.request(ModelLoad, {});
    for (const c of CASES) {
      const filled = c.request.prompt.replace('{}', c.request.subject);
      const prompts: Array<{ prompt: string; kind: PromptKind }> = [
        { prompt: filled, kind: 'edit' },
        ...(c.paraphrases ?? []).map((prompt) => ({ prompt, kind: 'paraphrase' as const })),
        ...(c.neighborhood ?? []).map((prompt) => ({ prompt, kind: 'neighborhood' as const })),
      ];
      const targets = [c.request.target, c.request.targetTrue!];
      const t0 = Date.now();
      const before = await client.request(EditProbe, { prompts: prompts.map((p) => p.prompt), targets, unedited: true });
      const record = await client.request(EditApply, { request: c.request });
      const after = await client.request(EditProbe, { prompts: prompts.map((p) => p.prompt), targets });
      // Each case on the unedited model.
      await client.request(EditRevert, { id: record.id });
      const { deltas: _deltas, modelHash: _hash, requests: _requests, ...rest } = record;
      const diff: EditDiff = {
        edit: rest,
        model: { name: model.name, backend: model.backend, nLayer: model.nLayer },
        targetNew: c.request.target,
        targetTrue: c.request.targetTrue!,
        prompts: prompts.map((p, i) => ({ ...p, before: before.prompts[i], after: after.prompts[i] })),
        status: 'applied',
        seconds: (Date.now() - t0) / 1000,
      };
      const file = path.join(ROOT, 'test', 'fixtures', `edit-${c.name}.json`);
      fs.writeFileSync(file, JSON.stringify(diff, null, 1) + '\n');
      console.error(`${c.name}: top after ${JSON.stringify(after.prompts[0].top[0])} → ${path.relative(ROOT, file)}`);
    }
  } finally {
    await client.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
