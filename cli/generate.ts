/** `moecat generate`: sample a continuation from a checkpoint, streamed to stdout. */
import type { Argv, CommandModule } from 'yargs';
import { ConfigError } from '../core/errors';
import { Engine } from '../inference/engine';
import { loadForServing } from '../inference/engineLoad';
import { backendOption, handle, startBackend } from './common';
import { loadKvMode } from '../inference/kv/options';
import { generateA2ATS } from '../inference/kv/model';

interface GenerateArgs {
  checkpoint: string;
  prompt: string;
  'max-tokens': number;
  temperature: number;
  'top-p': number;
  'top-k': number;
  seed: number;
  stop?: string[];
  chat: boolean;
  sparsity?: string;
  kv: string;
  'kv-ratio': number;
  backend?: string;
  threads?: number;
}

export const command: CommandModule<object, GenerateArgs> = {
  command: 'generate',
  describe: 'generate text from a checkpoint (prints the text; tokens/s and FFN experts/token on stderr)',
  builder: (y: Argv) =>
    y
      .option('checkpoint', { type: 'string', demandOption: true, describe: 'checkpoint dir, its `latest` link, or a run dir' })
      .option('prompt', { type: 'string', demandOption: true, describe: 'prompt text' })
      .option('max-tokens', { type: 'number', default: 64, describe: 'most tokens to generate' })
      .option('temperature', { type: 'number', default: 1, describe: 'sampling temperature; 0 = greedy' })
      .option('top-p', { type: 'number', default: 1, describe: 'nucleus sampling mass in (0, 1]' })
      .option('top-k', { type: 'number', default: 0, describe: 'keep the k most likely tokens; 0 = all' })
      .option('seed', { type: 'number', default: 0, describe: 'sampling seed (same seed, same text)' })
      .option('stop', { type: 'string', array: true, describe: 'stop strings (cut from the output)' })
      .option('chat', { type: 'boolean', default: false, describe: 'wrap the prompt in the chat template as a user message' })
      .option('kv', { type: 'string', default: 'full', choices: ['full', 'a2ats'], describe: 'attention over the KV cache: full, or a2ats (retrieval over calibrated key codebooks, batch 1; run `moecat calibrate --method a2ats` first)' })
      .option('kv-ratio', { type: 'number', default: 0.06, describe: 'A2ATS: share of the context retrieved per query head, in (0, 1]' })
      .option('sparsity', { type: 'string', describe: 'activation sparsity from `moecat calibrate` thresholds on the decode steps: chess, chess-ffn, cats' })
      .options(backendOption) as Argv<GenerateArgs>,
  handler: handle(async (a: GenerateArgs) => {
    const positiveInt = (v: number, flag: string) => {
      if (!Number.isInteger(v) || v < 1) throw new ConfigError(`${flag} must be a positive integer, got ${v}`, { where: flag });
    };
    positiveInt(a['max-tokens'], '--max-tokens');
    if (!(a.temperature >= 0)) throw new ConfigError(`--temperature must be >= 0, got ${a.temperature}`, { where: '--temperature' });
    if (!(a['top-p'] > 0 && a['top-p'] <= 1)) throw new ConfigError(`--top-p must be in (0, 1], got ${a['top-p']}`, { where: '--top-p' });
    if (!Number.isInteger(a['top-k']) || a['top-k'] < 0) throw new ConfigError(`--top-k must be an integer >= 0, got ${a['top-k']}`, { where: '--top-k' });
    if (!Number.isInteger(a.seed)) throw new ConfigError(`--seed must be an integer, got ${a.seed}`, { where: '--seed' });
    await startBackend(a.backend, undefined, { flag: a.threads });
    const { model, tokenizer } = loadForServing(a.checkpoint);
    const promptIds = a.chat ? tokenizer.renderChat([{ role: 'user', content: a.prompt }], { addGenerationPrompt: true }).ids : tokenizer.encode(a.prompt);
    if (promptIds.length === 0) throw new ConfigError('the prompt is empty', { where: '--prompt' });
    if (promptIds.length > model.config.maxSeqLen) {
      throw new ConfigError(`the prompt has ${promptIds.length} tokens; the model's context is ${model.config.maxSeqLen}`, { where: '--prompt' });
    }
    const kv = loadKvMode(model.dir, a.kv, a['kv-ratio']);
    if (kv) {
      const t0 = performance.now();
      const r = generateA2ATS(
        model,
        promptIds,
        {
          maxTokens: a['max-tokens'], temperature: a.temperature, topP: a['top-p'], topK: a['top-k'], seed: a.seed,
          stopIds: a.chat ? [tokenizer.special.end, tokenizer.special.eos] : [tokenizer.special.eos],
          stopStrings: a.stop ?? [],
          decode: (ids) => tokenizer.decode(ids),
        },
        kv.codebooks,
        kv.opts,
      );
      let text = tokenizer.decode(r.ids);
      for (const s of a.stop ?? []) if (s && text.endsWith(s)) text = text.slice(0, -s.length);
      process.stdout.write(text + '\n');
      const seconds = (performance.now() - t0) / 1000;
      process.stderr.write(`${r.ids.length} tokens in ${seconds.toFixed(2)} s | A2ATS ratio ${kv.opts.ratio}, keys ${kv.opts.keys ?? 'wrope'}: attended ${(100 * r.attendedShare).toFixed(1)}% of cached keys | FFN experts/token ${r.ffnExpertsPerToken.toFixed(2)} | finish: ${r.finishReason}\n`);
      model.store.dispose();
      return;
    }
    const sparse = a.sparsity ? (await import('../inference/sparse')).loadSparsity(model, a.sparsity) : undefined;
    if (sparse) process.stderr.write(sparse.describe() + '\n');
    const engine = new Engine(model, tokenizer, { maxBatch: 1, steps: sparse?.steps });
    const t0 = performance.now();
    const r = await engine.submit(
      {
        promptIds,
        maxTokens: a['max-tokens'],
        sampling: { temperature: a.temperature, topP: a['top-p'], topK: a['top-k'], seed: a.seed },
        stopIds: a.chat ? [tokenizer.special.end, tokenizer.special.eos] : [tokenizer.special.eos],
        stopStrings: a.stop ?? [],
      },
      { onDelta: (d) => process.stdout.write(d) },
    ).result;
    const seconds = (performance.now() - t0) / 1000;
    process.stdout.write('\n');
    const decodeSeconds = seconds - r.timeToFirstToken;
    const decodeRate = r.completionTokens > 1 && decodeSeconds > 0 ? (r.completionTokens - 1) / decodeSeconds : 0;
    process.stderr.write(
      `${r.completionTokens} tokens in ${seconds.toFixed(2)} s | prompt ${r.promptTokens} tokens, first token after ${(r.timeToFirstToken * 1000).toFixed(0)} ms | ` +
        `decode ${decodeRate.toFixed(1)} tokens/s | FFN experts/token ${r.ffnExpertsPerToken.toFixed(2)} of top-${model.config.moe.topK} | finish: ${r.finishReason}\n`,
    );
    await engine.close();
    model.store.dispose();
  }),
};
