/**
 * The OpenAI-compatible server, driven by the official `openai` client (DESIGN.md section 8):
 * models, completions, chat, SSE streaming, usage, seeds, logprobs, stop strings, metrics, and
 * greedy output equal to generate() for a checkpoint loaded with verified checksums.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import OpenAI from 'openai';
import { useTestBackend } from '../helpers/backend';
import { loadServingModel, ServingModel } from '../../inference/loadModel';
import { generate } from '../../inference/generate';
import { RunningServer, startServer } from '../../inference/server';
import { testTokenizer, tinyModelConfig, tmpDir, writeModelCheckpoint } from './fixtures';
import { parseModelConfig } from '../../model/config';

const tok = testTokenizer();

describe('inference server (openai client)', () => {
  let model: ServingModel;
  let srv: RunningServer;
  let client: OpenAI;
  let runDir: string;

  before(async () => {
    await useTestBackend();
    runDir = tmpDir();
    writeModelCheckpoint(runDir, parseModelConfig(tinyModelConfig), 11, tok.toJSON());
    model = loadServingModel(runDir);
    srv = await startServer({ model, tokenizer: tok, host: '127.0.0.1', port: 0, maxBatch: 8, modelId: 'tiny' });
    client = new OpenAI({ baseURL: srv.url + '/v1', apiKey: 'unused', maxRetries: 0 });
  });
  after(async () => {
    await srv?.close();
    model?.store.dispose();
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  it('lists the served model', async () => {
    const list = await client.models.list();
    assert.deepEqual(list.data.map((m) => m.id), ['tiny']);
    assert.equal((await client.models.retrieve('tiny')).id, 'tiny');
  });

  it('answers a completion with text, finish_reason and exact usage counts', async () => {
    const r = await client.completions.create({ model: 'tiny', prompt: 'Hello', max_tokens: 7, temperature: 0 });
    assert.equal(r.object, 'text_completion');
    assert.equal(r.choices.length, 1);
    assert.equal(typeof r.choices[0].text, 'string');
    assert.equal(r.choices[0].finish_reason, 'length');
    const n = tok.encode('Hello').length;
    assert.deepEqual(r.usage, { prompt_tokens: n, completion_tokens: 7, total_tokens: n + 7 });
  });

  it('answers a chat completion rendered with the chat template', async () => {
    const messages = [
      { role: 'system' as const, content: 'Be brief.' },
      { role: 'user' as const, content: 'Hi!' },
    ];
    const r = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 5, temperature: 0 });
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.choices[0].message.role, 'assistant');
    assert.equal(typeof r.choices[0].message.content, 'string');
    assert.equal(r.usage!.prompt_tokens, tok.renderChat(messages, { addGenerationPrompt: true }).ids.length);
    assert.ok(r.usage!.completion_tokens >= 1 && r.usage!.completion_tokens <= 5);
  });

  it('greedy completion equals generate() on the same checkpoint', async () => {
    const prompt = 'The model says';
    const ref = generate(model, tok.encode(prompt), { temperature: 0, topP: 1, topK: 0, seed: 0, maxTokens: 24, stopIds: [tok.special.eos] });
    const r = await client.completions.create({ model: 'tiny', prompt, max_tokens: 24, temperature: 0, logprobs: 0 });
    assert.equal(r.choices[0].text, tok.decode(ref.ids, { skipSpecial: true }));
    assert.deepEqual(r.choices[0].logprobs!.token_logprobs, ref.logprobs);
  });

  it('greedy output is the same alone and inside a batch of concurrent requests', async () => {
    const prompts = ['one', 'two three', 'four five six seven', 'eight'];
    const alone: string[] = [];
    for (const p of prompts) alone.push((await client.completions.create({ model: 'tiny', prompt: p, max_tokens: 20, temperature: 0 })).choices[0].text);
    const together = await Promise.all(
      [...prompts, ...prompts].map((p) => client.completions.create({ model: 'tiny', prompt: p, max_tokens: 20, temperature: 0 })),
    );
    assert.deepEqual(together.map((r) => r.choices[0].text), [...alone, ...alone]);
  });

  it('streams a completion as well-formed SSE chunks that add up to the full text, then usage', async () => {
    const full = await client.completions.create({ model: 'tiny', prompt: 'Stream me', max_tokens: 12, temperature: 0 });
    const stream = await client.completions.create({ model: 'tiny', prompt: 'Stream me', max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = '';
    const ids = new Set<string>();
    const finishes: (string | null)[] = [];
    let usage: OpenAI.CompletionUsage | null | undefined;
    let afterUsage = 0;
    for await (const c of stream) {
      assert.equal(c.object, 'text_completion');
      ids.add(c.id);
      if (usage) afterUsage++;
      if (c.usage) {
        usage = c.usage;
        assert.equal(c.choices.length, 0);
        continue;
      }
      assert.equal(c.choices.length, 1);
      text += c.choices[0].text;
      finishes.push(c.choices[0].finish_reason);
    }
    assert.equal(ids.size, 1);
    assert.equal(text, full.choices[0].text);
    assert.equal(finishes[finishes.length - 1], 'length');
    assert.ok(finishes.slice(0, -1).every((f) => f === null));
    const n = tok.encode('Stream me').length;
    assert.deepEqual(usage, { prompt_tokens: n, completion_tokens: 12, total_tokens: n + 12 });
    assert.equal(afterUsage, 0);
  });

  it('streams a chat completion: role first, content deltas, finish_reason last', async () => {
    const messages = [{ role: 'user' as const, content: 'Tell me' }];
    const full = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 10, temperature: 0 });
    const stream = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 10, temperature: 0, stream: true });
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const c of stream) chunks.push(c);
    assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk' && c.choices.length === 1 && c.id === chunks[0].id));
    assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    assert.equal(chunks.map((c) => c.choices[0].delta.content ?? '').join(''), full.choices[0].message.content);
    assert.equal(chunks[chunks.length - 1].choices[0].finish_reason, full.choices[0].finish_reason);
    assert.ok(chunks.slice(0, -1).every((c) => c.choices[0].finish_reason === null));
  });

  it('reproduces a sampled completion with the same seed and varies it with another', async () => {
    const ask = (seed: number) => client.completions.create({ model: 'tiny', prompt: 'Once', max_tokens: 16, temperature: 1, top_p: 0.95, seed });
    const [a, b, c] = await Promise.all([ask(1), ask(1), ask(2)]);
    assert.equal(a.choices[0].text, b.choices[0].text);
    assert.notEqual(a.choices[0].text, c.choices[0].text);
  });

  it('returns completion logprobs with top alternatives, the chosen token first under greedy', async () => {
    const r = await client.completions.create({ model: 'tiny', prompt: 'Log', max_tokens: 6, temperature: 0, logprobs: 3 });
    const lp = r.choices[0].logprobs!;
    assert.equal(lp.tokens!.length, 6);
    assert.equal(lp.token_logprobs!.length, 6);
    assert.deepEqual(lp.text_offset!.slice(0, 1), [0]);
    lp.top_logprobs!.forEach((top, i) => {
      const vals = Object.values(top);
      assert.ok(vals.length >= 1 && vals.length <= 3);
      assert.ok(vals.every((v) => v <= 0));
      assert.equal(Math.max(...vals), lp.token_logprobs![i]);
    });
  });

  it('returns chat logprobs in the chat shape', async () => {
    const r = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'x' }], max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 2 });
    const content = r.choices[0].logprobs!.content!;
    assert.equal(content.length, r.usage!.completion_tokens - (r.choices[0].finish_reason === 'stop' ? 1 : 0));
    for (const t of content) {
      assert.equal(typeof t.token, 'string');
      assert.deepEqual(t.bytes, [...Buffer.from(t.token, 'utf8')]);
      assert.equal(t.top_logprobs.length, 2);
    }
  });

  it('cuts the text before a stop string and reports finish_reason stop', async () => {
    const full = (await client.completions.create({ model: 'tiny', prompt: 'Stop test', max_tokens: 30, temperature: 0 })).choices[0].text;
    // A stop string from the middle of the greedy text (its first occurrence decides the cut).
    const stop = full.slice(10, 13);
    const r = await client.completions.create({ model: 'tiny', prompt: 'Stop test', max_tokens: 30, temperature: 0, stop: [stop] });
    assert.equal(r.choices[0].text, full.slice(0, full.indexOf(stop)));
    assert.equal(r.choices[0].finish_reason, 'stop');
  });

  it('serves /health and Prometheus /metrics with tokens, TTFT, throughput, KV cache and FFN experts per token', async () => {
    const health = (await (await fetch(srv.url + '/health')).json()) as { status: string };
    assert.equal(health.status, 'ok');
    const res = await fetch(srv.url + '/metrics');
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type')!, /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    const value = (name: string) => {
      const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
      assert.ok(m, `${name} missing`);
      return Number(m[1]);
    };
    assert.ok(value('moecat_generation_tokens_total') > 0);
    assert.ok(value('moecat_prompt_tokens_total') > 0);
    assert.ok(value('moecat_time_to_first_token_seconds_count') > 0);
    assert.ok(value('moecat_decode_tokens_per_second') > 0);
    assert.equal(value('moecat_kv_cache_bytes'), 0);
    const ffn = value('moecat_ffn_experts_per_token');
    assert.ok(ffn >= 0 && ffn <= model.config.moe.topK);
    assert.match(text, /^moecat_requests_total\{finish_reason="length"\} \d+$/m);
    assert.match(text, /^# TYPE moecat_time_to_first_token_seconds histogram$/m);
    assert.match(text, /^moecat_http_requests_total\{route="\/v1\/completions",status="200"\} \d+$/m);
  });
});
