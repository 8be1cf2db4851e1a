/**
 * `moecat calibrate`: derive inference-time sparsification data from a checkpoint and a
 * prepared corpus, written beside the checkpoint (its own checksums stay valid). Methods are
 * pluggable: each name maps to a module exporting a calibration function, loaded lazily.
 */
import type { Argv, CommandModule } from 'yargs';
import { ConfigError } from '../core/errors';
import { loadPrepared, PreparedData } from '../data/prepared';
import { loadServingModel, ServingModel } from '../inference/loadModel';
import { KeyMode } from '../inference/kv/attention';
import { keyMode } from '../inference/kv/calibrate';
import { backendOption, handle, startBackend } from './common';

interface CalibrateArgs {
  method: string;
  checkpoint: string;
  data: string;
  sparsity: number;
  tokens: number;
  'seq-len'?: number;
  'codebook-size'?: number;
  keys?: string;
  backend?: string;
  threads?: number;
}

type CalibrationFn = (
  m: ServingModel,
  data: PreparedData,
  o: { sparsity: number; tokens: number; seqLen?: number; codebookSize?: number; keys?: KeyMode; log?: (line: string) => void },
) => { file: string; summary: Record<string, unknown> };

/** Method name -> loader of its calibration function (add a method with one line here). */
const METHODS: Record<string, () => CalibrationFn> = {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  chess: () => (require('../inference/sparse/calibrate') as typeof import('../inference/sparse/calibrate')).calibrateChess,
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  a2ats: () => (require('../inference/kv/calibrate') as typeof import('../inference/kv/calibrate')).calibrateA2ATSMethod,
};

export const command: CommandModule<object, CalibrateArgs> = {
  command: 'calibrate',
  describe: `calibrate inference sparsification for a checkpoint (methods: ${Object.keys(METHODS).join(', ')})`,
  builder: (y: Argv) =>
    y
      .option('method', { type: 'string', demandOption: true, choices: Object.keys(METHODS), describe: 'calibration method' })
      .option('checkpoint', { type: 'string', demandOption: true, describe: 'checkpoint dir, its `latest` link, or a run dir' })
      .option('data', { type: 'string', demandOption: true, describe: 'prepared data dir (`moecat prepare`) with the checkpoint\'s tokenizer' })
      .option('sparsity', { type: 'number', default: 0.5, describe: 'chess: target fraction of activations dropped, in [0, 1)' })
      .option('tokens', { type: 'number', default: 4096, describe: 'calibration tokens' })
      .option('seq-len', { type: 'number', describe: 'tokens per calibration window (default: chess 64, a2ats the model context)' })
      .option('codebook-size', { type: 'number', describe: 'a2ats: centroids per codebook, in [2, --tokens] (default: a power of two near tokens/16, at most 4096)' })
      .option('keys', { type: 'string', describe: `a2ats: keys the codebooks quantise: wrope (pre-RoPE keys scored with R_b q, the paper; default) or post-rope (keys after RoPE scored with the query at its position)` })
      .options(backendOption) as Argv<CalibrateArgs>,
  handler: handle(async (a: CalibrateArgs) => {
    const run = METHODS[a.method];
    if (!run) throw new ConfigError(`unknown method "${a.method}" (known: ${Object.keys(METHODS).join(', ')})`, { where: '--method' });
    if (!(a.sparsity >= 0 && a.sparsity < 1)) throw new ConfigError(`--sparsity must be in [0, 1), got ${a.sparsity}`, { where: '--sparsity' });
    for (const [flag, v] of [['--tokens', a.tokens], ['--seq-len', a['seq-len']]] as const) {
      if (v !== undefined && (!Number.isInteger(v) || v < 2)) throw new ConfigError(`${flag} must be an integer >= 2, got ${v}`, { where: flag });
    }
    const M = a['codebook-size'];
    if (M !== undefined) {
      if (a.method !== 'a2ats') throw new ConfigError(`--codebook-size applies to --method a2ats only`, { where: '--codebook-size' });
      if (!Number.isInteger(M) || M < 2 || M > a.tokens) throw new ConfigError(`--codebook-size must be an integer in [2, --tokens = ${a.tokens}], got ${M}`, { where: '--codebook-size' });
    }
    if (a.keys !== undefined) {
      if (a.method !== 'a2ats') throw new ConfigError(`--keys applies to --method a2ats only`, { where: '--keys' });
      keyMode(a.keys, undefined); // refuses an unknown mode before anything loads
    }
    await startBackend(a.backend, undefined, { flag: a.threads });
    const model = loadServingModel(a.checkpoint);
    try {
      const data = loadPrepared(a.data);
      const r = run()(model, data, { sparsity: a.sparsity, tokens: a.tokens, seqLen: a['seq-len'], codebookSize: M, keys: a.keys as KeyMode | undefined, log: (l) => process.stderr.write(l + '\n') });
      process.stderr.write(`wrote ${r.file}\n`);
      process.stdout.write(JSON.stringify({ method: a.method, file: r.file, ...r.summary }) + '\n');
    } finally {
      model.store.dispose();
    }
  }),
};
