/**
 * Serving load test (`npm run bench -- serveLoad`): the OpenAI-compatible server on 127.0.0.1
 * with the configs/small.yaml model shapes (random init; the vocabulary of a small trained
 * tokenizer), under N
 * concurrent streaming clients for a fixed time. Each client loops: a streaming completion
 * with a random prompt and max_tokens, read chunk by chunk; with probability --abort-rate it
 * aborts the request at a random chunk. Reports the responses by status (only 200 and 503
 * under a full queue are expected; anything else, and an error event inside a stream, is an
 * error), p50/p99 time between streamed
 * tokens and time to first token, the KV-cache gauge and running requests after each round,
 * and the server's memory idle before the load and after each of two rounds of seconds/2: RSS,
 * V8 heap, ArrayBuffers and the wasm heap after a GC, and again after the engine's idle release
 * (decoder scratch dropped, glibc's free pages trimmed). The server runs in a child process, the clients in this one.
 *
 * Usage: node dist/scripts/bench/serveLoad.js [--clients 64] [--seconds 60] [--abort-rate 0.2]
 *        [--max-batch 16] [--max-queue 32]
 */
import * as fs from 'fs';
import * as os from 'os';
import * as v8 from 'v8';
import * as vm from 'vm';
import { fork } from 'child_process';
import YAML from 'yaml';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../core/backend';
import { parseModelConfig } from '../../model/config';
import { initParams, paramSpecs, ParamStore } from '../../model/params';
import { initialBiases } from '../../model/transformer';
import { ServingModel } from '../../inference/loadModel';
import { startServer } from '../../inference/server';
import { Tokenizer } from '../../data/tokenizer';
import { decodeKernels } from '../../inference/decodeKernels';
import { arg, emit } from './args';

const round = (x: number, d = 2) => +x.toFixed(d);
const now = () => performance.now();

function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

/** The server's memory: RSS and what V8 knows of (heap, ArrayBuffers), plus the wasm backend's heap. */
interface Memory {
  rss_mib: number;
  heap_mib: number;
  heap_total_mib: number;
  external_mib: number;
  array_buffers_mib: number;
  wasm_heap_mib: number;
}

function memory(): Memory {
  const m = process.memoryUsage();
  const mib = (b: number) => round(b / 2 ** 20, 1);
  const wasm = (Reflect.get(tf.backend(), 'wasm') as { HEAPU8?: Uint8Array } | undefined)?.HEAPU8?.buffer.byteLength ?? 0; // the wasm backend's heap (0 on others)
  return { rss_mib: mib(m.rss), heap_mib: mib(m.heapUsed), heap_total_mib: mib(m.heapTotal), external_mib: mib(m.external), array_buffers_mib: mib(m.arrayBuffers), wasm_heap_mib: mib(wasm) };
}

/** Two full GCs 200 ms apart (ArrayBuffer backing stores are freed after the GC that finds them dead). */
async function collect(): Promise<void> {
  gc();
  await new Promise((r) => setTimeout(r, 200));
  gc();
}

/**
 * Memory of the idle server: after GC, then after the engine's idle release (what it runs by
 * itself idleReleaseMs after it goes idle), a GC and the release again (so the pages of the
 * buffers that GC freed are trimmed too; the figures then do not depend on when V8 collects).
 */
interface IdleMemory {
  gc: Memory;
  released: Memory;
}

async function gauge(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = text.match(new RegExp(`^${name} (\\S+)$`, 'm'));
  return m ? Number(m[1]) : NaN;
}

interface Tally {
  byStatus: Map<string, number>;
  aborted: number;
  tokens: number;
  gaps: number[];
  ttft: number[];
}

/** One streaming completion; returns when it ends, fails or is aborted. */
async function oneRequest(url: string, rnd: () => number, abortRate: number, t: Tally): Promise<void> {
  const words = ['the', 'quick', 'brown', 'fox', 'model', 'expert', 'zero', 'cost', 'hello', 'there'];
  const prompt = Array.from({ length: 4 + Math.floor(rnd() * 40) }, () => words[Math.floor(rnd() * words.length)]).join(' ');
  const maxTokens = 16 + Math.floor(rnd() * 48);
  const abortAt = rnd() < abortRate ? Math.floor(rnd() * maxTokens) : -1;
  const ac = new AbortController();
  const t0 = now();
  let res: Response;
  try {
    res = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'moecat', prompt, max_tokens: maxTokens, temperature: 1, stream: true, seed: Math.floor(rnd() * 1e6) }),
      signal: ac.signal,
    });
  } catch (e) {
    t.byStatus.set(`fetch error: ${(e as Error).message}`, (t.byStatus.get(`fetch error: ${(e as Error).message}`) ?? 0) + 1);
    return;
  }
  t.byStatus.set(String(res.status), (t.byStatus.get(String(res.status)) ?? 0) + 1);
  if (res.status !== 200 || !res.body) {
    await res.text().catch(() => '');
    return;
  }
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  let last = t0;
  let n = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i: number;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const ev = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
        if (ev.startsWith('data: {"error"')) {
          t.byStatus.set('error event in stream', (t.byStatus.get('error event in stream') ?? 0) + 1);
          continue;
        }
        const at = now();
        if (n === 0) t.ttft.push(at - t0);
        else t.gaps.push(at - last);
        last = at;
        n++;
        t.tokens++;
        if (n === abortAt) {
          ac.abort();
          t.aborted++;
          return;
        }
      }
    }
  } catch (e) {
    if (!ac.signal.aborted) t.byStatus.set(`stream error: ${(e as Error).message}`, (t.byStatus.get(`stream error: ${(e as Error).message}`) ?? 0) + 1);
  }
}

/** The server process: starts the server, sends its URL, answers memory requests, closes on 'stop'. */
async function serverChild(): Promise<void> {
  const maxBatch = Number(arg('max-batch', '16'));
  const maxQueue = Number(arg('max-queue', '32'));
  await selectBackend('wasm');
  const raw = YAML.parse(fs.readFileSync('configs/small.yaml', 'utf8'));
  const tokenizer = Tokenizer.train(['the quick brown fox jumps over the lazy dog; the model says hello there. ', 'zero experts cost nothing; a mixture of experts routes each token.'], { vocabSize: 320 });
  // The small model's shapes with the tokenizer's vocabulary (the engine samples every model id).
  const c = parseModelConfig({ ...raw.model, vocabSize: tokenizer.vocabSize });
  const model: ServingModel = { dir: '(random init)', step: 0, config: c, store: new ParamStore(paramSpecs(c), initParams(c, 1234)), biases: initialBiases(c), tokenizerJson: null };
  const srv = await startServer({ model, tokenizer, port: 0, maxBatch, maxQueue, modelId: 'moecat' });
  process.on('message', (msg: string) => {
    if (msg === 'memory') {
      void srv.engine
        .whenIdle()
        .then(collect)
        .then(async () => {
          const before = memory();
          // Scratch dropped, then collected, then the C heap trimmed of what the GC freed.
          srv.engine.releaseIdleMemory();
          await collect();
          srv.engine.releaseIdleMemory();
          process.send!({ memory: { gc: before, released: memory() } });
        });
    } else if (msg === 'stop') {
      void srv.close().then(() => {
        model.store.dispose();
        process.exit(0);
      });
    }
  });
  process.send!({ url: srv.url, steps: `host-${decodeKernels().name}` });
}

async function main(): Promise<void> {
  if (process.argv.includes('--child')) return serverChild();
  const clients = Number(arg('clients', '64'));
  const seconds = Number(arg('seconds', '60'));
  const abortRate = Number(arg('abort-rate', '0.2'));
  const maxBatch = Number(arg('max-batch', '16'));
  const maxQueue = Number(arg('max-queue', '32'));
  // The server runs in its own process, so the clients' JS does not share its event loop.
  const child = fork(__filename, ['--child', '--max-batch', String(maxBatch), '--max-queue', String(maxQueue)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const next = <T>(key: string) => new Promise<T>((resolve) => child.once('message', (m: Record<string, T>) => resolve(m[key])));
  const ready = new Promise<{ url: string; steps: string }>((resolve) => child.once('message', (m: { url: string; steps: string }) => resolve(m)));
  const { url, steps } = await ready;
  const childMemory = () => {
    const p = next<IdleMemory>('memory');
    child.send('memory');
    return p;
  };
  let seed = 12345;
  const rnd = () => {
    seed = (seed * 1664525 + 1013904223) >>> 0;
    return seed / 2 ** 32;
  };
  try {
    // Warm-up: one request, so the idle baseline includes the decoder's weights and scratch.
    await oneRequest(url, rnd, 0, { byStatus: new Map(), aborted: 0, tokens: 0, gaps: [], ttft: [] });
    const idle = await childMemory();
    const afterRounds: IdleMemory[] = [];
    // Two rounds: memory after the second shows whether the first left anything behind.
    for (let round_ = 0; round_ < 2; round_++) {
      const t: Tally = { byStatus: new Map(), aborted: 0, tokens: 0, gaps: [], ttft: [] };
      const end = now() + (seconds * 1000) / 2;
      let requests = 0;
      const t0 = now();
      await Promise.all(
        Array.from({ length: clients }, async () => {
          while (now() < end) {
            requests++;
            const before = t.byStatus.get('503') ?? 0;
            await oneRequest(url, rnd, abortRate, t);
            // A full queue answers 503 at once: back off a little before retrying.
            if ((t.byStatus.get('503') ?? 0) > before) await new Promise((r) => setTimeout(r, 100));
          }
        }),
      );
      const wall = (now() - t0) / 1000;
      afterRounds.push(await childMemory());
      const kvAfter = await gauge(url, 'moecat_kv_cache_bytes');
      const runningAfter = await gauge(url, 'moecat_requests_running');
      const errors = [...t.byStatus.entries()].filter(([k]) => k !== '200' && k !== '503').reduce((n, [, v]) => n + v, 0);
      emit({
        bench: 'serving load test (streaming clients, random aborts)',
        steps,
        config: 'small',
        round: round_ + 1,
        clients,
        seconds: round(wall, 1),
        max_batch: maxBatch,
        max_queue: maxQueue,
        requests,
        responses: Object.fromEntries(t.byStatus),
        error_responses: errors,
        aborted_by_client: t.aborted,
        streamed_tokens: t.tokens,
        tokens_per_s: round(t.tokens / wall, 1),
        token_gap_p50_ms: round(quantile(t.gaps, 0.5), 1),
        token_gap_p99_ms: round(quantile(t.gaps, 0.99), 1),
        ttft_p50_ms: round(quantile(t.ttft, 0.5), 1),
        ttft_p99_ms: round(quantile(t.ttft, 0.99), 1),
        kv_cache_bytes_after: kvAfter,
        requests_running_after: runningAfter,
        load_avg_1m: round(os.loadavg()[0], 1),
      });
      if (errors > 0 || kvAfter !== 0 || runningAfter !== 0) process.exitCode = 1;
    }
    const points: [string, IdleMemory][] = [['idle (after one warm-up request)', idle], ['after round 1', afterRounds[0]], ['after round 2', afterRounds[1]]];
    for (const [point, m] of points) {
      emit({ bench: 'serving load test: server memory (idle)', point, when: 'after GC', ...m.gc });
      emit({ bench: 'serving load test: server memory (idle)', point, when: 'after GC + idle release', ...m.released });
    }
  } finally {
    child.send('stop');
    await new Promise((r) => child.once('exit', r));
  }
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
