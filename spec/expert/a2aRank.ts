/**
 * Fixture rank for spec/expert/syncComm.spec.ts (run as `node a2aRank.js <mode>` with RANK,
 * WORLD_SIZE, MASTER_ADDR, MASTER_PORT, MOECAT_SECRET). Prints one JSON line.
 *  - exchange: blocking and started/overlapped all-to-alls with variable sizes; reports mismatches.
 *  - lose: rank 1 dies after the first exchange; the others report the error of the second.
 */
import { SyncComm } from '../../parallel/syncComm';

/** What rank `from` sends to rank `to` in round `round`: (from+2·to+round) % 5 values. */
function payload(from: number, to: number, round: number): Float32Array {
  const n = (from + 2 * to + round) % 5;
  return Float32Array.from({ length: n * 3 }, (_, i) => from * 1000 + to * 100 + round * 10 + i + 0.25);
}

async function main(): Promise<void> {
  const rank = Number(process.env.RANK);
  const W = Number(process.env.WORLD_SIZE);
  const comm = await SyncComm.create({ rank, worldSize: W, masterAddr: process.env.MASTER_ADDR!, masterPort: Number(process.env.MASTER_PORT), secret: process.env.MOECAT_SECRET!, timeoutMs: 15000 });
  const mode = process.argv[2];
  const parts = (round: number) => Array.from({ length: W }, (_, to) => payload(rank, to, round));
  const check = (got: Float32Array[], round: number): string[] =>
    got.flatMap((g, from) => {
      const want = payload(from, rank, round);
      return g.length === want.length && g.every((v, i) => v === want[i]) ? [] : [`round ${round} from ${from}: got ${g.length} values`];
    });
  if (mode === 'exchange') {
    const bad: string[] = [];
    for (let round = 0; round < 4; round++) bad.push(...check(comm.syncAllToAll(parts(round)), round));
    // Started exchanges: compute while the worker moves data, two in flight, waited out of order.
    const a = comm.startAllToAll(parts(4));
    const b = comm.startAllToAll(parts(5));
    let spin = 0;
    for (let i = 0; i < 1e6; i++) spin += i % 7;
    bad.push(...check(b.wait(), 5), ...check(a.wait(), 4));
    await comm.close();
    process.stdout.write(JSON.stringify({ rank, bad, spin: spin > 0 }) + '\n');
    return;
  }
  if (mode === 'lose') {
    comm.syncAllToAll(parts(0));
    if (rank === 1) process.kill(process.pid, 'SIGKILL');
    const t0 = Date.now();
    try {
      comm.syncAllToAll(parts(1));
      process.stdout.write(JSON.stringify({ rank, error: null }) + '\n');
    } catch (e) {
      process.stdout.write(JSON.stringify({ rank, error: (e as Error).message, kind: (e as Error).constructor.name, ms: Date.now() - t0 }) + '\n');
    }
    process.exit(0);
  }
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ fatal: String((e as Error).stack ?? e) }) + '\n');
  process.exit(1);
});
