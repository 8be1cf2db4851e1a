/**
 * OpenAI-compatible HTTP server over the engine (DESIGN.md section 8), on Node's `http`:
 *   GET  /health                 liveness + queue state (never needs the key)
 *   GET  /metrics                Prometheus text (requests, tokens, TTFT, decode tokens/s, KV
 *                                cache use, FFN experts per token)
 *   GET  /v1/models[/:id]
 *   POST /v1/completions         text or token-id prompt, logprobs, SSE streaming
 *   POST /v1/chat/completions    the tokenizer's chat template, stops at <|end|> / eos
 * Streaming is Server-Sent Events: `data: <chunk JSON>` lines, a usage chunk when
 * stream_options.include_usage is set, then `data: [DONE]`. A client that disconnects is
 * cancelled and its KV cache freed at the next engine step. Bad requests get the OpenAI error
 * shape with a 4xx (serverErrors.ts) and the server keeps serving.
 */
import * as crypto from 'crypto';
import * as http from 'http';
import { AddressInfo } from 'net';
import { Engine, EngineError, EngineOptions, EngineTokenizer } from './engine';
import { ServingModel } from './loadModel';
import { PROMETHEUS_CONTENT_TYPE } from './metrics';
import { ApiError } from './serverErrors';
import { ApiRequest, chatRequest, completionRequest } from './serverRequests';
import { finishReason, ResponseBuilder } from './serverResponses';

export interface ServerOptions {
  model: ServingModel;
  tokenizer: EngineTokenizer;
  /** Default 127.0.0.1: the server is local unless told otherwise. */
  host?: string;
  /** Default 8080; 0 picks a free port. */
  port?: number;
  /** When set, every route but /health needs `Authorization: Bearer <key>`. */
  apiKey?: string;
  maxBatch?: number;
  maxQueue?: number;
  /** Replacement engine forward passes (EngineOptions.steps), e.g. `--sparsity chess`. */
  steps?: EngineOptions['steps'];
  /** Largest request body accepted (default 1 MiB); larger ones get 413. */
  maxBodyBytes?: number;
  /** The id clients pass as `model` (default "moecat"). */
  modelId?: string;
  /** One line per request (method, path, status, ms). */
  log?: (line: string) => void;
}

export interface RunningServer {
  url: string;
  engine: Engine;
  modelId: string;
  close(): Promise<void>;
}

const ROUTES = ['/health', '/metrics', '/v1/models', '/v1/completions', '/v1/chat/completions'];

function sameKey(given: string, expected: string): boolean {
  const h = (s: string) => crypto.createHash('sha256').update(s).digest();
  return crypto.timingSafeEqual(h(given), h(expected));
}

function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = () => new ApiError(413, `The request body is larger than the limit of ${limit} bytes.`, 'invalid_request_error', null, 'request_too_large');
  const declared = Number(req.headers['content-length']);
  return new Promise((resolve, reject) => {
    if (Number.isFinite(declared) && declared > limit) {
      req.resume(); // drain, so the client can read our answer
      reject(tooLarge());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (over) {
        if (size > 16 * limit) req.destroy();
        return;
      }
      if (size > limit) {
        over = true;
        chunks.length = 0;
        reject(tooLarge());
      } else chunks.push(c);
    });
    req.on('end', () => {
      if (!over) resolve(Buffer.concat(chunks));
    });
    req.on('error', reject);
  });
}

export async function startServer(o: ServerOptions): Promise<RunningServer> {
  const host = o.host ?? '127.0.0.1';
  const modelId = o.modelId ?? 'moecat';
  const maxBody = o.maxBodyBytes ?? 1 << 20;
  const engine = new Engine(o.model, o.tokenizer, { maxBatch: o.maxBatch ?? 8, maxQueue: o.maxQueue ?? 256, steps: o.steps });
  const httpRequests = engine.metrics.counter('moecat_http_requests_total', 'HTTP requests answered, by route and status.');
  const fingerprint = `moecat-step-${o.model.step}`;
  const context = o.model.config.maxSeqLen;
  const vocab = Math.min(o.model.config.vocabSize, o.tokenizer.vocabSize);
  const created = Math.floor(Date.now() / 1000);
  const modelCard = { id: modelId, object: 'model', created, owned_by: 'moecat' };

  const json = (res: http.ServerResponse, status: number, body: unknown, extra: http.OutgoingHttpHeaders = {}) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...extra });
    res.end(text);
  };

  async function generateRoute(req: http.IncomingMessage, res: http.ServerResponse, kind: 'completion' | 'chat'): Promise<void> {
    const raw = await readBody(req, maxBody);
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch (e) {
      throw new ApiError(400, `We could not parse the JSON body of your request: ${(e as Error).message}`, 'invalid_request_error', null, 'invalid_json');
    }
    const r: ApiRequest = kind === 'completion' ? completionRequest(body, o.tokenizer, context, vocab) : chatRequest(body, o.tokenizer, context, vocab);
    if (r.model !== modelId) throw new ApiError(404, `The model '${r.model}' does not exist; this server serves '${modelId}'.`, 'invalid_request_error', 'model', 'model_not_found');
    const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${crypto.randomBytes(12).toString('hex')}`;
    const out = new ResponseBuilder(kind, id, modelId, o.tokenizer, fingerprint);
    const sse = (obj: unknown) => res.write(`data: ${JSON.stringify(obj)}\n\n`);
    let handle;
    try {
      handle = engine.submit(
        r.gen,
        r.stream
          ? {
              onDelta: (delta, token) => {
                if (res.destroyed || res.writableEnded) throw new Error('client went away');
                const tokens = r.logprobs && token ? [token] : null;
                if (delta || tokens) sse(out.chunk(delta, tokens, null, { includeUsage: r.includeUsage }));
              },
            }
          : {},
      );
    } catch (e) {
      if (e instanceof EngineError && e.code === 'E_OVERLOADED') throw new ApiError(503, e.message, 'overloaded_error', null, 'overloaded');
      if (e instanceof EngineError) throw new ApiError(400, e.message, 'invalid_request_error', e.where ?? null, 'invalid_value');
      throw e;
    }
    const h = handle;
    res.on('close', () => {
      if (!res.writableFinished) h.cancel();
    });
    if (!r.stream) {
      const result = await h.result;
      if (result.finishReason === 'cancelled') return;
      json(res, 200, out.full(result, r.logprobs));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    if (kind === 'chat') sse(out.chunk('', null, null, { role: true, includeUsage: r.includeUsage }));
    try {
      const result = await h.result;
      if (result.finishReason === 'cancelled' || res.destroyed) return;
      sse(out.chunk('', null, finishReason(result), { includeUsage: r.includeUsage }));
      if (r.includeUsage) sse(out.usageChunk(result));
    } catch (e) {
      if (!res.destroyed) sse(new ApiError(500, `generation failed: ${(e as Error).message}`, 'server_error', null, 'internal_error').body());
    }
    if (!res.destroyed) res.end('data: [DONE]\n\n');
  }

  async function route(req: http.IncomingMessage, res: http.ServerResponse, path: string): Promise<void> {
    const method = req.method ?? 'GET';
    if (path === '/health' && method === 'GET') {
      json(res, 200, { status: 'ok', model: modelId, step: o.model.step, running: engine.running, waiting: engine.waiting });
      return;
    }
    if (o.apiKey !== undefined) {
      const auth = req.headers.authorization ?? '';
      const m = /^Bearer\s+(.+)$/i.exec(auth);
      if (!m) throw new ApiError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.", 'invalid_request_error', null, 'invalid_api_key');
      if (!sameKey(m[1].trim(), o.apiKey)) throw new ApiError(401, 'Incorrect API key provided.', 'invalid_request_error', null, 'invalid_api_key');
    }
    if (path === '/metrics' && method === 'GET') {
      const text = engine.metrics.render();
      res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE, 'content-length': Buffer.byteLength(text) });
      res.end(text);
      return;
    }
    if (path === '/v1/models' && method === 'GET') return json(res, 200, { object: 'list', data: [modelCard] });
    if (path.startsWith('/v1/models/') && method === 'GET') {
      const want = decodeURIComponent(path.slice('/v1/models/'.length));
      if (want === modelId) return json(res, 200, modelCard);
      throw new ApiError(404, `The model '${want}' does not exist; this server serves '${modelId}'.`, 'invalid_request_error', 'model', 'model_not_found');
    }
    if (path === '/v1/completions' && method === 'POST') return generateRoute(req, res, 'completion');
    if (path === '/v1/chat/completions' && method === 'POST') return generateRoute(req, res, 'chat');
    if (ROUTES.includes(path)) throw new ApiError(405, `${method} is not allowed on ${path}.`, 'invalid_request_error', null, 'method_not_allowed');
    throw new ApiError(404, `Unknown route ${method} ${path}.`, 'invalid_request_error', null, 'not_found');
  }

  const server = http.createServer((req, res) => {
    const t0 = Date.now();
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    const label = ROUTES.includes(path) ? path : path.startsWith('/v1/models/') ? '/v1/models/:id' : 'other';
    res.on('finish', () => {
      httpRequests.inc({ route: label, status: String(res.statusCode) });
      o.log?.(`${req.method} ${path} ${res.statusCode} ${Date.now() - t0}ms`);
    });
    route(req, res, path).catch((e: unknown) => {
      const err = e instanceof ApiError ? e : new ApiError(500, `internal error: ${(e as Error)?.message ?? String(e)}`, 'server_error', null, 'internal_error');
      if (res.headersSent) {
        if (!res.destroyed) res.end();
        return;
      }
      // After a 413 the rest of the body is not read: close the connection once answered.
      json(res, err.status, err.body(), err.status === 413 ? { connection: 'close' } : {});
    });
  });
  server.keepAliveTimeout = 5000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 8080, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const url = `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  let closing: Promise<void> | null = null;
  return {
    url,
    engine,
    modelId,
    close: () => {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        await engine.close();
        server.closeAllConnections();
        await closed;
      })();
      return closing;
    },
  };
}
