/**
 * The server under load and abuse (DESIGN.md sections 8 and 10): 32 concurrent streams with
 * some clients leaving mid-stream, every bad request answered with the right 4xx in the OpenAI
 * error shape, the API key enforced; the server keeps serving and frees every KV cache.
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import OpenAI from 'openai';
import { useTestBackend } from '../helpers/backend';
import { ServingModel } from '../../inference/loadModel';
import { RunningServer, startServer } from '../../inference/server';
import { testTokenizer, makeModel } from './fixtures';

const tok = testTokenizer();

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

async function post(url: string, body: string, headers: Record<string, string> = {}): Promise<{ status: number; body: ErrorBody }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  return { status: res.status, body: (await res.json()) as ErrorBody };
}

function assertErrorShape(b: ErrorBody): void {
  assert.deepEqual(Object.keys(b), ['error']);
  assert.deepEqual(Object.keys(b.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(typeof b.error.message, 'string');
  assert.ok(b.error.message.length > 0);
}

async function waitIdle(srv: RunningServer): Promise<void> {
  for (let i = 0; i < 200 && (srv.engine.running > 0 || srv.engine.waiting > 0); i++) await new Promise((r) => setTimeout(r, 10));
  await srv.engine.whenIdle();
}

describe('inference server robustness', () => {
  let model: ServingModel;
  let srv: RunningServer;
  let url: string;

  before(async () => {
    await useTestBackend();
    model = makeModel();
    srv = await startServer({ model, tokenizer: tok, port: 0, maxBatch: 16, maxBodyBytes: 64 * 1024 });
    url = srv.url;
  });
  after(async () => {
    await srv?.close();
    model?.store.dispose();
  });

  it('binds 127.0.0.1 by default', () => {
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
  });

  it('serves 32 concurrent streams with some clients aborting, and frees every cache', async () => {
    await waitIdle(srv);
    const idleTensors = tf.memory().numTensors;
    const client = new OpenAI({ baseURL: url + '/v1', apiKey: 'x', maxRetries: 0 });
    const runs = Array.from({ length: 32 }, async (_, i) => {
      const abortAfter = i % 4 === 1 ? 2 + (i % 3) : -1;
      const stream = await client.completions.create({ model: 'moecat', prompt: `client ${i} says`, max_tokens: 16, temperature: 0.8, seed: i, stream: true, stream_options: { include_usage: true } });
      let text = '';
      let chunks = 0;
      let finish: string | null = null;
      let usage: OpenAI.CompletionUsage | undefined;
      for await (const c of stream) {
        if (chunks++ === abortAfter) {
          stream.controller.abort();
          return { aborted: true, text, finish, usage };
        }
        if (c.usage) usage = c.usage;
        else {
          assert.equal(c.choices.length, 1);
          text += c.choices[0].text;
          finish = c.choices[0].finish_reason ?? finish;
        }
      }
      return { aborted: false, text, finish, usage };
    });
    const results = await Promise.all(runs);
    const completed = results.filter((r) => !r.aborted);
    // Eight clients leave mid-stream (one may finish first if it samples eos early).
    assert.ok(results.filter((r) => r.aborted).length >= 6);
    for (const r of completed) {
      assert.ok(r.finish === 'length' || r.finish === 'stop');
      assert.ok(r.usage && r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 16);
      assert.equal(r.usage!.total_tokens, r.usage!.prompt_tokens + r.usage!.completion_tokens);
    }
    await waitIdle(srv);
    assert.equal(srv.engine.kvCacheBytes(), 0);
    assert.equal(tf.memory().numTensors, idleTensors);
    const after = await client.completions.create({ model: 'moecat', prompt: 'still here?', max_tokens: 3, temperature: 0 });
    assert.equal(after.usage!.completion_tokens, 3);
    const metrics = await (await fetch(url + '/metrics')).text();
    assert.match(metrics, /^moecat_requests_total\{finish_reason="cancelled"\} [1-9]\d*$/m);
  });

  const bad: [string, string, string, number, string | null, string | null][] = [
    ['malformed JSON', '/v1/completions', '{"model": "moecat", "prompt": ', 400, null, 'invalid_json'],
    ['a body that is not an object', '/v1/completions', '[1, 2]', 400, null, 'invalid_type'],
    ['an unknown model', '/v1/completions', JSON.stringify({ model: 'gpt-9', prompt: 'hi' }), 404, 'model', 'model_not_found'],
    ['a missing prompt', '/v1/completions', JSON.stringify({ model: 'moecat' }), 400, 'prompt', 'missing_required_parameter'],
    ['a prompt of the wrong type', '/v1/completions', JSON.stringify({ model: 'moecat', prompt: { text: 'hi' } }), 400, 'prompt', 'invalid_type'],
    ['max_tokens of the wrong type', '/v1/completions', JSON.stringify({ model: 'moecat', prompt: 'hi', max_tokens: 'ten' }), 400, 'max_tokens', 'invalid_type'],
    ['temperature of the wrong type', '/v1/chat/completions', JSON.stringify({ model: 'moecat', messages: [{ role: 'user', content: 'hi' }], temperature: 'hot' }), 400, 'temperature', 'invalid_type'],
    ['a message with an unknown role', '/v1/chat/completions', JSON.stringify({ model: 'moecat', messages: [{ role: 'robot', content: 'hi' }] }), 400, 'messages[0].role', 'invalid_value'],
    ['max_tokens of 0', '/v1/completions', JSON.stringify({ model: 'moecat', prompt: 'hi', max_tokens: 0 }), 400, 'max_tokens', 'invalid_value'],
    ['max_tokens beyond the context', '/v1/chat/completions', JSON.stringify({ model: 'moecat', messages: [{ role: 'user', content: 'hi' }], max_tokens: 100000 }), 400, 'max_tokens', 'invalid_value'],
    ['a prompt longer than the context', '/v1/completions', JSON.stringify({ model: 'moecat', prompt: 'x'.repeat(500) }), 400, 'prompt', 'context_length_exceeded'],
    ['a chat longer than the context', '/v1/chat/completions', JSON.stringify({ model: 'moecat', messages: [{ role: 'user', content: 'y'.repeat(500) }] }), 400, 'messages', 'context_length_exceeded'],
    ['token ids outside the vocabulary', '/v1/completions', JSON.stringify({ model: 'moecat', prompt: [1, 2, 99999] }), 400, 'prompt', 'invalid_value'],
    ['a body over the size limit', '/v1/completions', JSON.stringify({ model: 'moecat', prompt: 'z'.repeat(100 * 1024) }), 413, null, 'request_too_large'],
  ];
  for (const [what, path, body, status, param, code] of bad) {
    it(`answers ${what} with ${status} in the OpenAI error shape, then keeps serving`, async () => {
      const r = await post(url + path, body);
      assert.equal(r.status, status);
      assertErrorShape(r.body);
      assert.equal(r.body.error.param, param);
      assert.equal(r.body.error.code, code);
      assert.equal(r.body.error.type, 'invalid_request_error');
      const ok = await post(url + '/v1/completions', JSON.stringify({ model: 'moecat', prompt: 'ok', max_tokens: 2 }));
      assert.equal(ok.status, 200);
    });
  }

  it('answers unknown routes with 404 and wrong methods with 405', async () => {
    const a = await fetch(url + '/v2/nothing');
    assert.equal(a.status, 404);
    assertErrorShape((await a.json()) as ErrorBody);
    const b = await fetch(url + '/v1/completions');
    assert.equal(b.status, 405);
    assertErrorShape((await b.json()) as ErrorBody);
  });

  describe('with an API key', () => {
    let keyed: RunningServer;
    before(async () => {
      keyed = await startServer({ model, tokenizer: tok, port: 0, apiKey: 'sekrit' });
    });
    after(async () => keyed?.close());

    it('refuses requests without the key with 401 and the OpenAI error shape', async () => {
      const r = await post(keyed.url + '/v1/completions', JSON.stringify({ model: 'moecat', prompt: 'hi' }));
      assert.equal(r.status, 401);
      assertErrorShape(r.body);
      assert.equal(r.body.error.code, 'invalid_api_key');
      const models = await fetch(keyed.url + '/v1/models');
      assert.equal(models.status, 401);
    });

    it('refuses a wrong key through the openai client (AuthenticationError)', async () => {
      const c = new OpenAI({ baseURL: keyed.url + '/v1', apiKey: 'wrong', maxRetries: 0 });
      await assert.rejects(c.models.list(), (e: unknown) => e instanceof OpenAI.AuthenticationError && e.status === 401);
    });

    it('serves requests that carry the key, and /health without it', async () => {
      const c = new OpenAI({ baseURL: keyed.url + '/v1', apiKey: 'sekrit', maxRetries: 0 });
      const r = await c.completions.create({ model: 'moecat', prompt: 'hi', max_tokens: 2, temperature: 0 });
      assert.equal(r.usage!.completion_tokens, 2);
      assert.equal((await fetch(keyed.url + '/health')).status, 200);
    });
  });
});
