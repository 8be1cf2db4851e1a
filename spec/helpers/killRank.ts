/**
 * Shared fault drill for multi-process training specs: start two ranks of `moecat train`, wait
 * until rank 0 reports training steps, SIGKILL rank 1, and return how rank 0 ended.
 */
import { spawn } from 'child_process';

export async function killRankOneDuringTraining(cli: string, argsFor: (rank: number) => string[], env: NodeJS.ProcessEnv, totalSteps: number): Promise<{ code: number | null; log: string; tookMs: number }> {
  const ranks = [0, 1].map((r) => spawn(process.execPath, [cli, ...argsFor(r)], { env }));
  let log = '';
  ranks[0].stderr.on('data', (d) => (log += d));
  ranks[0].stdout.on('data', (d) => (log += d));
  try {
    const started = new RegExp(`train [2-9]\\d*/${totalSteps}`);
    const t0 = Date.now();
    while (!started.test(log)) {
      if (Date.now() - t0 > 120000) throw new Error(`training never started:\n${log}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const killedAt = Date.now();
    const exited = new Promise<number | null>((resolve) => ranks[0].on('exit', (c) => resolve(c)));
    ranks[1].kill('SIGKILL');
    const code = await exited;
    return { code, log, tookMs: Date.now() - killedAt };
  } finally {
    for (const p of ranks) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  }
}
