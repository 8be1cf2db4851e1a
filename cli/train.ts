/** `moecat train`: config-driven training, resume, and data-parallel ranks. */
import type { Argv, CommandModule } from 'yargs';
import * as path from 'path';
import { checkDataParallel, loadTrainConfig } from '../trainer/config';
import { runTraining } from '../trainer/run';
import { backendOption, handle, Progress, startBackend } from './common';
import * as fs from 'fs';
import { ConfigError } from '../core/errors';
import { latestCheckpoint } from '../core/checkpoint';
import { discoverEnv } from '../parallel/env';
import { Group } from '../parallel/collectives';
import { SyncComm } from '../parallel/syncComm';
import { ExpertParallel } from '../parallel/expertParallel';

/** Joins the data-parallel group when the world size (flags or scheduler variables) exceeds 1. */
async function joinGroup(a: TrainArgs, microBatches?: number): Promise<{ group: Group; env: ReturnType<typeof discoverEnv> } | null> {
  const [host, port] = a.master ? a.master.split(':') : [undefined, undefined];
  const env = discoverEnv(process.env, {
    worldSize: a['world-size'],
    rank: a.rank,
    masterAddr: host,
    masterPort: port !== undefined ? Number(port) : undefined,
  });
  if (env.worldSize <= 1) return null;
  // Refused before the rendezvous, not at the first collective.
  if (microBatches !== undefined) checkDataParallel(microBatches, env.worldSize);
  if (!env.secret) throw new ConfigError('a multi-process run needs a shared secret in MOECAT_SECRET', { where: 'env MOECAT_SECRET', hint: 'moecat launch sets one; with Slurm or Kubernetes export the same value on every rank' });
  process.stderr.write(`rank ${env.rank}/${env.worldSize}: joining ${env.masterAddr}:${env.masterPort} (${env.source})\n`);
  const group = await Group.init({ rank: env.rank, worldSize: env.worldSize, masterAddr: env.masterAddr, masterPort: env.masterPort, secret: env.secret, timeoutMs: (a['peer-timeout'] ?? 120) * 1000 });
  return { group, env };
}

/**
 * --expert-parallel: a second group in a worker thread (rendezvous on the master port + 1, or
 * --ep-port) moves tokens for the FFN experts each rank owns (parallel/expertParallel.ts).
 */
async function joinExperts(a: TrainArgs, joined: NonNullable<Awaited<ReturnType<typeof joinGroup>>>): Promise<SyncComm> {
  const { env } = joined;
  const port = a['ep-port'] ?? env.masterPort + 1;
  return SyncComm.create({ rank: env.rank, worldSize: env.worldSize, masterAddr: env.masterAddr, masterPort: port, secret: env.secret!, timeoutMs: (a['peer-timeout'] ?? 120) * 1000, delayMs: a['ep-delay-ms'] ?? 0 });
}

interface TrainArgs {
  'world-size'?: number;
  rank?: number;
  master?: string;
  'peer-timeout'?: number;
  'auto-resume'?: boolean;
  config?: string;
  out?: string;
  set?: string[];
  'max-steps'?: number;
  'checkpoint-every'?: number;
  resume?: string;
  'init-from'?: string;
  'init-optimizer'?: 'reset' | 'keep';
  backend?: string;
  threads?: number;
  'expert-parallel'?: boolean;
  'ep-port'?: number;
  'ep-overlap'?: boolean;
  'ep-delay-ms'?: number;
  'ep-shard-experts'?: boolean;
  'memory-report'?: string;
}

export const command: CommandModule<object, TrainArgs> = {
  command: 'train',
  describe: 'train a model from a YAML config (or resume a run)',
  builder: (y: Argv) =>
    y
      .option('config', { type: 'string', describe: 'training config (YAML)' })
      .option('out', { type: 'string', describe: 'run directory (default runs/<config name>)' })
      .option('set', { type: 'string', array: true, describe: 'override a config key: --set optim.lr=1e-3' })
      .option('max-steps', { type: 'number', describe: 'stop after this many total steps' })
      .option('checkpoint-every', { type: 'number', describe: 'checkpoint interval in steps' })
      .option('resume', { type: 'string', describe: 'resume the run in this directory from its latest checkpoint' })
      .option('init-from', { type: 'string', describe: 'start a new run (step 0) from this checkpoint\'s weights and expert biases; the model config must match (maxSeqLen and ropeBase may grow)' })
      .option('init-optimizer', { choices: ['reset', 'keep'] as const, describe: 'with --init-from: reset Adam moments (default) or keep the parent\'s' })
      .option('auto-resume', { type: 'boolean', describe: 'resume --out from its latest checkpoint when it has one, else start (used by launch --max-restarts)' })
      .option('world-size', { type: 'number', describe: 'data-parallel world size (default: RANK/WORLD_SIZE, Slurm or Kubernetes variables, else 1)' })
      .option('rank', { type: 'number', describe: 'this process\'s rank' })
      .option('master', { type: 'string', describe: 'rank 0 address host:port (default MASTER_ADDR:MASTER_PORT)' })
      .option('peer-timeout', { type: 'number', default: 120, describe: 'seconds without traffic before a peer counts as lost (a training step blocks the event loop)' })
      .option('expert-parallel', { type: 'boolean', describe: 'place FFN experts on ranks (expert e on rank floor(e·W/N)) and move tokens by all-to-all; needs a world size > 1 dividing model.moe.nExperts' })
      .option('ep-port', { type: 'number', describe: 'rendezvous port of the expert-parallel group (default: master port + 1)' })
      .option('ep-overlap', { type: 'boolean', default: true, describe: 'ScMoE layers overlap expert dispatch/combine with FFN0, Attn1 and FFN1 (--no-ep-overlap waits at once)' })
      .option('ep-shard-experts', { type: 'boolean', default: true, describe: 'with parallel.shard: none each rank keeps only its own experts\' weights, gradients and Adam moments (--no-ep-shard-experts replicates them)' })
      .option('ep-delay-ms', { type: 'number', hidden: true, describe: 'artificial latency before each expert all-to-all (benchmarks)' })
      .option('memory-report', { type: 'string', hidden: true, describe: 'each rank writes its state bytes, peak RSS and bytes sent per step to FILE.rank<R>.json (benchmarks)' })
      .options(backendOption) as Argv<TrainArgs>,
  handler: handle(async (a: TrainArgs) => {
    if (!a.config && !a.resume) throw new ConfigError('give --config <yaml> to start a run or --resume <run dir> to continue one', { where: 'moecat train' });
    if (a['init-from'] && a.resume) throw new ConfigError('--init-from starts a new run; it cannot be combined with --resume', { where: '--init-from' });
    if (a['init-optimizer'] && !a['init-from']) throw new ConfigError('--init-optimizer goes with --init-from', { where: '--init-optimizer', hint: 'or set initFrom.optimizer in the config' });
    const sets = [...(a.set ?? [])];
    // --init-from lands in the config (initFrom.*) so the run's config.yaml records it too.
    if (a['init-from']) sets.push(`initFrom.checkpoint=${JSON.stringify(a['init-from'])}`);
    if (a['init-optimizer']) sets.push(`initFrom.optimizer=${a['init-optimizer']}`);
    let loaded: ReturnType<typeof loadTrainConfig> | undefined;
    if (a.config) loaded = loadTrainConfig(a.config, sets);
    const outDir = a.resume ?? a.out ?? path.join('runs', path.basename(a.config!, path.extname(a.config!)));
    const hasCheckpoint = fs.existsSync(outDir) && latestCheckpoint(outDir) !== null;
    const resume = !!a.resume || (!!a['auto-resume'] && hasCheckpoint);
    if (!resume && hasCheckpoint) {
      throw new ConfigError(`${outDir} already holds checkpoints`, { where: '--out', hint: 'continue it with --resume, or choose a new --out' });
    }
    const be = await startBackend(a.backend, loaded?.config.backend, { flag: a.threads, config: loaded?.config.threads });
    const joined = await joinGroup(a, loaded?.config.data.microBatches);
    const group = joined?.group ?? null;
    const rank0 = !group || group.rank === 0;
    let comm: SyncComm | null = null;
    let ep: ExpertParallel | undefined;
    if (a['expert-parallel']) {
      if (!joined) throw new ConfigError('--expert-parallel needs a world size above 1', { where: '--expert-parallel', hint: 'run it under moecat launch --nproc N, or give --world-size/--rank/--master' });
      comm = await joinExperts(a, joined);
      ep = new ExpertParallel(comm, { overlap: a['ep-overlap'] ?? true });
      const M = loaded?.config.data.microBatches;
      if (rank0 && M !== undefined && M !== joined.env.worldSize) {
        process.stderr.write(`expert parallel: data.microBatches (${M}) != world size (${joined.env.worldSize}): correct, but expert gradients are summed per rank first, so the result is not bitwise equal to a single-process run\n`);
      }
    }
    let bar: Progress | null = null;
    let startStep = 0;
    // Memory report: peak RSS and bytes sent at the end of each step (before the final checkpoint).
    const perStep: { rss: number; sent: number; epSent: number }[] = [];
    const res = await runTraining({
      outDir,
      config: loaded?.config,
      rawConfig: loaded?.raw,
      resume,
      dp: group ?? undefined,
      moe: ep?.moe,
      shardExperts: a['ep-shard-experts'] ?? true,
      writeFiles: rank0,
      maxSteps: a['max-steps'],
      checkpointEvery: a['checkpoint-every'],
      backend: be.name,
      onStart: (t, info) => {
        startStep = t.state.step;
        if (!rank0) return;
        const init = !info.resumedFrom && t.cfg.initFrom ? ` | init from ${t.cfg.initFrom.checkpoint} (optimizer ${t.cfg.initFrom.optimizer})` : '';
        process.stderr.write(`run: ${outDir} | data: ${info.data.describe()} | params: ${t.layout.total.toLocaleString()}${info.resumedFrom ? ` | resumed from ${info.resumedFrom}` : ''}${init}\n`);
        if (ep && !t.experts) process.stderr.write(`expert parallel with parallel.shard: ${t.cfg.parallel.shard}${a['ep-shard-experts'] === false ? ' and --no-ep-shard-experts' : ''}: every rank holds every expert's weights\n`);
        const target = Math.min(a['max-steps'] ?? t.cfg.train.steps, t.cfg.train.steps);
        bar = new Progress('train', target, t.state.step);
      },
      onStep: (m) => {
        // Fault drill for the launcher tests: a rank dies abruptly once, mid-run.
        const die = process.env.MOECAT_FAULT_EXIT_AT_STEP;
        if (die && Number(die) === m.step && (process.env.MOECAT_RESTART ?? '0') === '0' && String(group?.rank ?? 0) === (process.env.MOECAT_FAULT_RANK ?? '0')) {
          process.stderr.write(`fault drill: rank ${group?.rank ?? 0} exits at step ${m.step}\n`);
          process.kill(process.pid, 'SIGKILL');
        }
        if (a['memory-report']) perStep.push({ rss: process.resourceUsage().maxRSS * 1024, sent: group?.bytesSent ?? 0, epSent: comm?.bytesSent ?? 0 });
        const val = typeof m.val_loss === 'number' ? ` | val ${m.val_loss.toFixed(4)}` : '';
        (bar as Progress | null)?.update(m.step, `loss ${m.loss.toFixed(4)}${val} | ${Math.round(m.tokens_per_s)} tok/s | ffn/tok ${m.ffn_experts_per_token.toFixed(2)}`);
      },
    });
    (bar as Progress | null)?.stop();
    if (a['memory-report']) {
      const rank = group?.rank ?? 0;
      const steps = Math.max(1, res.trainer.state.step - startStep);
      const b = res.trainer.stateBytes();
      // Per step: bytes this rank sent in that step (data-parallel group, expert all-to-alls).
      const sentByStep = perStep.map((p, i) => p.sent - (i ? perStep[i - 1].sent : 0));
      const epSentByStep = perStep.map((p, i) => p.epSent - (i ? perStep[i - 1].epSent : 0));
      const report = {
        rank,
        world_size: group?.worldSize ?? 1,
        shard: res.trainer.cfg.parallel.shard,
        params_bytes: b.params,
        grad_buffer_bytes: b.gradBuffers,
        reduced_grad_bytes: b.reducedGrad,
        gathered_unit_bytes: b.gathered,
        optimizer_bytes: b.optimizer,
        experts_sharded: res.trainer.experts !== null,
        expert_params_bytes: b.expertParams,
        peak_rss_bytes: process.resourceUsage().maxRSS * 1024,
        peak_rss_by_step: perStep.map((p) => p.rss),
        bytes_sent_per_step: Math.round((group?.bytesSent ?? 0) / steps),
        dp_bytes_sent_by_step: sentByStep,
        ep_bytes_sent_by_step: epSentByStep,
      };
      fs.writeFileSync(`${a['memory-report']}.rank${rank}.json`, JSON.stringify(report) + '\n');
    }
    await comm?.close();
    await group?.close();
    const last = res.last;
    if (!last) process.stdout.write(`nothing to do: the run is at step ${res.trainer.state.step}\n`);
    if (last) process.stdout.write(`step ${last.step} loss ${last.loss.toFixed(4)} param_hash ${last.param_hash ?? res.trainer.paramHash()}\n`);
    if (res.checkpoints.length) process.stdout.write(`checkpoint: ${res.checkpoints[res.checkpoints.length - 1]}\n`);
    res.trainer.dispose();
  }),
};
