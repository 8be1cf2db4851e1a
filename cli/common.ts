/**
 * Shared CLI plumbing: the --backend flag, start-up line, typed-error printing and progress.
 * Only cli/ (and core/backend) read argv and the environment (DESIGN.md section 11).
 */
import { SingleBar, Presets } from 'cli-progress';
import { BackendChoice, describeBackend, selectBackend, BackendInfo } from '../core/backend';
import { MoecatError } from '../core/errors';

export const backendOption = {
  backend: {
    type: 'string' as const,
    describe: 'compute backend: auto (fastest that loads), tensorflow-gpu, webgpu, tensorflow, cpu-native, wasm, cpu',
  },
};

/** Flag > MOECAT_BACKEND > config key > auto. Prints the chosen backend on stderr. */
export async function startBackend(flag?: string, configValue?: string): Promise<BackendInfo> {
  const choice = (flag ?? process.env.MOECAT_BACKEND ?? configValue ?? 'auto') as BackendChoice;
  const info = await selectBackend(choice);
  process.stderr.write(describeBackend(info) + '\n');
  return info;
}

/** Runs a command handler; typed errors print one clear line and exit 2, others exit 1. */
export function handle<A>(fn: (args: A) => Promise<void>): (args: A) => Promise<void> {
  return async (args: A) => {
    try {
      await fn(args);
    } catch (e) {
      const code = e instanceof MoecatError ? 2 : 1;
      process.stderr.write(e instanceof MoecatError ? `error: ${e.message}\n` : `internal error: ${(e as Error).stack ?? String(e)}\n`);
      // Linger briefly before exiting so in-flight socket writes (a data-parallel Abort naming
      // the root cause) reach the peers; process.exit does not flush them.
      process.exitCode = code;
      setTimeout(() => process.exit(code), 300).unref();
    }
  };
}

/** A progress bar with ETA on a terminal; plain periodic lines otherwise. */
export class Progress {
  private bar: SingleBar | null = null;
  private lastLine = 0;
  constructor(private readonly label: string, private readonly total: number, private readonly start = 0) {
    if (process.stderr.isTTY) {
      this.bar = new SingleBar(
        { format: `${label} [{bar}] {value}/{total} | ETA {eta_formatted} | {info}`, stream: process.stderr, hideCursor: true },
        Presets.shades_classic,
      );
      this.bar.start(total, start, { info: '' });
    }
  }

  update(value: number, info: string): void {
    if (this.bar) {
      this.bar.update(value, { info });
      return;
    }
    const now = Date.now();
    if (now - this.lastLine > 2000 || value === this.total || value === this.start + 1) {
      this.lastLine = now;
      process.stderr.write(`${this.label} ${value}/${this.total} ${info}\n`);
    }
  }

  stop(): void {
    this.bar?.stop();
  }
}
