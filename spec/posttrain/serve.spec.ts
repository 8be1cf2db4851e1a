/**
 * End to end: a short SFT on the generated Moby-Dick instruction set (loss on assistant tokens,
 * val_loss reported), then the checkpoint served through startServer and queried with the
 * official `openai` client: a well-formed chat completion that stops at <|end|>.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import OpenAI from 'openai';
import { useTestBackend } from '../helpers/backend';
import { Tokenizer } from '../../data/tokenizer';
import { instructionSet, mobyDickChapters, toJsonl } from '../../data/sftData';
import { parseTrainConfig } from '../../trainer/config';
import { runTraining } from '../../trainer/run';
import { readMetrics } from '../../trainer/metrics';
import { loadServingModel, ServingModel } from '../../inference/loadModel';
import { RunningServer, startServer } from '../../inference/server';
import { tinyModelConfig, tmpDir } from '../inference/fixtures';

describe('SFT then serve (openai client)', function () {
  this.timeout(600000);
  let dir: string;
  let model: ServingModel | null = null;
  let srv: RunningServer | null = null;
  let tok: Tokenizer;
  const question = 'What is the title of chapter 1?';

  before(async () => {
    await useTestBackend();
    dir = tmpDir('moecat-sftserve-');
    // A small slice of the generated set: chapter-title questions for the first chapters.
    const all = instructionSet(mobyDickChapters(), { seed: 0 });
    const convs = all.filter((c) => c.messages.length === 2 && /title of chapter [1-6]\?/.test(c.messages[0].content));
    convs.push(...all.filter((c) => /Which chapter is called/.test(c.messages[c.messages.length - 2].content)).slice(0, 2));
    fs.writeFileSync(path.join(dir, 'sft.jsonl'), toJsonl(convs));
    tok = Tokenizer.train(convs.flatMap((c) => c.messages.map((m) => m.content)), { vocabSize: 272 });
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), tok.toJSON());
    const raw = {
      seed: 5,
      model: { ...tinyModelConfig, initStd: 0.02 },
      data: { sft: { file: path.join(dir, 'sft.jsonl'), tokenizer: path.join(dir, 'tokenizer.json'), valFraction: 0.2, valEvery: 20 }, seqLen: 48, microBatchSize: 4, microBatches: 1 },
      optim: { lr: 0.01, weightDecay: 0, schedule: { type: 'constant' } },
      train: { steps: 120, checkpointEvery: 0 },
      stability: { spike: { enabled: false } },
    };
    const r = await runTraining({ outDir: path.join(dir, 'run'), config: parseTrainConfig(raw), rawConfig: raw, backend: 'test' });
    r.trainer.dispose();
    model = loadServingModel(path.join(dir, 'run'));
    srv = await startServer({ model, tokenizer: tok, port: 0, modelId: 'moecat-sft' });
  });
  after(async () => {
    await srv?.close();
    model?.store.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('reports val_loss every valEvery steps, well below chance on the held-out conversations', () => {
    const ms = readMetrics(path.join(dir, 'run', 'metrics.jsonl')).filter((m) => typeof m.val_loss === 'number');
    assert.deepEqual(ms.map((m) => m.step), [20, 40, 60, 80, 100, 120]);
    // The held-out answers share the template ("Chapter N is ..."), so val loss drops far
    // below the uniform ln(vocab); the set is tiny, so later steps overfit (not asserted).
    const best = Math.min(...ms.map((m) => m.val_loss as number));
    assert.ok(ms.every((m) => Number.isFinite(m.val_loss as number)));
    assert.ok(best < Math.log(tok.vocabSize) - 1, `best val_loss ${best}`);
    process.stderr.write(`      val_loss by step: ${ms.map((m) => `${m.step}:${(m.val_loss as number).toFixed(3)}`).join(' ')}\n`);
  });

  it('answers in the chat format: a well-formed chat completion that stops at <|end|>', async () => {
    const client = new OpenAI({ baseURL: srv!.url + '/v1', apiKey: 'unused', maxRetries: 0 });
    const r = await client.chat.completions.create({ model: 'moecat-sft', messages: [{ role: 'user', content: question }], max_tokens: 40, temperature: 0 });
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.model, 'moecat-sft');
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0].message.role, 'assistant');
    const content = r.choices[0].message.content ?? '';
    assert.ok(content.length > 0, 'non-empty answer');
    assert.ok(!content.includes('<|end|>'));
    assert.equal(r.choices[0].finish_reason, 'stop', `answer ${JSON.stringify(content)} did not stop at <|end|>`);
    assert.ok(r.usage!.completion_tokens < 40);
    assert.equal(r.usage!.prompt_tokens, tok.renderChat([{ role: 'user', content: question }], { addGenerationPrompt: true }).ids.length);
  });
});
