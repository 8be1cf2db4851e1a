/**
 * Prints what `--backend auto` picks and the webgpu adapter (scripts/device/gpu-check.sh): on a
 * machine with a hardware adapter, auto must choose webgpu; a software one only when forced.
 * Usage: node dist/scripts/device/probe.js [auto|webgpu]
 */
import { describeBackend, selectBackend, BackendChoice } from '../../core/backend';

async function main(): Promise<void> {
  const choice = (process.argv[2] ?? 'auto') as BackendChoice;
  const info = await selectBackend(choice);
  process.stdout.write(describeBackend(info) + '\n');
}

main().catch((e) => {
  process.stderr.write(`probe: ${(e as Error).message}\n`);
  process.exit(2);
});
