/** `moecat serve`: the OpenAI-compatible HTTP server over a checkpoint. */
import type { Argv, CommandModule } from 'yargs';
import { ConfigError } from '../core/errors';
import { defaultModelId, loadForServing } from '../inference/engineLoad';
import { startServer } from '../inference/server';
import { backendOption, handle, startBackend } from './common';
import { KV_MODES, loadKvMode } from '../inference/kv/options';
import { a2atsEngineSteps } from '../inference/kv/engineSteps';

interface ServeArgs {
  checkpoint: string;
  host: string;
  port: number;
  'api-key'?: string;
  'max-batch': number;
  'max-queue': number;
  'max-body-bytes': number;
  'model-name'?: string;
  quiet: boolean;
  sparsity?: string;
  kv: string;
  'kv-ratio': number;
  backend?: string;
  threads?: number;
}

export const command: CommandModule<object, ServeArgs> = {
  command: 'serve',
  describe: 'serve a checkpoint over the OpenAI HTTP API (/v1/completions, /v1/chat/completions, /metrics)',
  builder: (y: Argv) =>
    y
      .option('checkpoint', { type: 'string', demandOption: true, describe: 'checkpoint dir, its `latest` link, or a run dir' })
      .option('host', { type: 'string', default: '127.0.0.1', describe: 'address to bind (0.0.0.0 exposes the server to the network)' })
      .option('port', { type: 'number', default: 8080, describe: 'port (0 = any free port)' })
      .option('api-key', { type: 'string', describe: 'require `Authorization: Bearer <key>` (default: $MOECAT_API_KEY, else none)' })
      .option('max-batch', { type: 'number', default: 8, describe: 'most sequences decoded together per step' })
      .option('max-queue', { type: 'number', default: 256, describe: 'most waiting requests before answering 503' })
      .option('max-body-bytes', { type: 'number', default: 1 << 20, describe: 'largest request body (413 above)' })
      .option('model-name', { type: 'string', describe: 'model id clients send (default: the run name)' })
      .option('quiet', { type: 'boolean', default: false, describe: 'no per-request log lines' })
      .option('sparsity', { type: 'string', describe: 'activation sparsity from `moecat calibrate` thresholds (chess, chess-ffn, cats), on every row of the batched decode step' })
      .option('kv', { type: 'string', default: 'full', choices: [...KV_MODES], describe: 'attention over the KV cache: full, or a2ats (retrieval over calibrated key codebooks, K/V on the host; run `moecat calibrate --method a2ats` first)' })
      .option('kv-ratio', { type: 'number', default: 0.06, describe: 'A2ATS: share of the context retrieved per query head, in (0, 1]' })
      .options(backendOption) as Argv<ServeArgs>,
  handler: handle(async (a: ServeArgs) => {
    for (const [flag, v, min] of [['--port', a.port, 0], ['--max-batch', a['max-batch'], 1], ['--max-queue', a['max-queue'], 0], ['--max-body-bytes', a['max-body-bytes'], 1]] as const) {
      if (flag === '--port' && !(Number.isInteger(v) && v >= 0 && v <= 65535)) throw new ConfigError(`--port must be an integer from 0 to 65535, got ${v}`, { where: flag, hint: '0 picks any free port' });
      if (!Number.isInteger(v) || v < min) throw new ConfigError(`${flag} must be an integer >= ${min}, got ${v}`, { where: flag });
    }
    if (a.kv === 'a2ats' && a.sparsity) throw new ConfigError('--kv a2ats cannot be combined with --sparsity (each replaces the decode step); use one of them');
    await startBackend(a.backend, undefined, { flag: a.threads });
    const { model, tokenizer } = loadForServing(a.checkpoint);
    const modelId = a['model-name'] ?? defaultModelId(model.dir);
    const kv = loadKvMode(model.dir, a.kv, a['kv-ratio']);
    const a2ats = kv ? a2atsEngineSteps(model, kv) : undefined;
    if (a2ats) process.stderr.write(a2ats.describe() + '\n');
    const sparse = a.sparsity ? (await import('../inference/sparse')).loadSparsity(model, a.sparsity) : undefined;
    if (sparse) process.stderr.write(sparse.describe() + '\n');
    const srv = await startServer({
      model,
      tokenizer,
      host: a.host,
      port: a.port,
      apiKey: a['api-key'] ?? process.env.MOECAT_API_KEY,
      maxBatch: a['max-batch'],
      maxQueue: a['max-queue'],
      maxBodyBytes: a['max-body-bytes'],
      steps: a2ats ?? sparse?.steps,
      modelId,
      log: a.quiet ? undefined : (line) => process.stderr.write(`${new Date().toISOString()} ${line}\n`),
    });
    const mode = kv ? ` | kv a2ats ratio ${kv.opts.ratio}` : '';
    process.stderr.write(`serving '${modelId}' (${model.dir}, step ${model.step}) at ${srv.url}/v1 | max batch ${a['max-batch']}${mode}${a['api-key'] ?? process.env.MOECAT_API_KEY ? ' | API key required' : ''}\n`);
    await new Promise<void>((resolve) => {
      const stop = (sig: string) => {
        process.stderr.write(`${sig}: shutting down\n`);
        void srv.close().then(resolve);
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    });
    model.store.dispose();
    process.exit(0);
  }),
};
