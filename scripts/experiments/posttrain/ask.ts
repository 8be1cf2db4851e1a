/**
 * Serves a checkpoint with startServer and asks one chat question over HTTP
 * (POST /v1/chat/completions), printing the reply and finish_reason.
 * Usage: node dist/scripts/experiments/posttrain/ask.js <checkpoint or run dir> <question>
 */
import { selectBackend } from '../../../core/backend';
import { Tokenizer } from '../../../data/tokenizer';
import { loadServingModel } from '../../../inference/loadModel';
import { startServer } from '../../../inference/server';

async function main(): Promise<void> {
  const [ck, question] = process.argv.slice(2);
  await selectBackend((process.env.BACKEND as 'wasm') ?? 'wasm');
  const model = loadServingModel(ck);
  const tokenizer = Tokenizer.fromJSON(model.tokenizerJson!, `${model.dir}/tokenizer.json`);
  const srv = await startServer({ model, tokenizer, port: 0 });
  try {
    const r = await fetch(`${srv.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'moecat', messages: [{ role: 'user', content: question }], max_tokens: 40, temperature: 0 }),
    });
    const body = (await r.json()) as { choices: { message: { content: string }; finish_reason: string }[] };
    process.stdout.write(`Q: ${question}\nA: ${body.choices[0].message.content}\nfinish_reason: ${body.choices[0].finish_reason}\n`);
  } finally {
    await srv.close();
    model.store.dispose();
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exit(1);
});
