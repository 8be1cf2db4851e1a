/**
 * All-reduce bandwidth over loopback: spawns W ranks (real processes, ws over 127.0.0.1) and
 * prints one JSON line per (W, size) with the median time and bus bandwidth
 * busBW = 2(W-1)/W · bytes / time (the nccl-tests convention: comparable across W), plus one
 * line of raw loopback TCP bandwidth as the ceiling.
 *   node dist/scripts/bench/allreduce.js [--worlds 2,4] [--sizes-mb 1,4,16,64]
 */
import { spawn } from 'child_process';
import * as net from 'net';
import { Group } from '../../parallel/collectives';
import { freePort } from '../../parallel/launcher';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

async function worker(): Promise<void> {
  const rank = Number(process.env.RANK);
  const W = Number(process.env.WORLD_SIZE);
  const g = await Group.init({
    rank, worldSize: W, masterAddr: '127.0.0.1', masterPort: Number(process.env.MASTER_PORT), secret: process.env.MOECAT_SECRET!,
    log: () => {}, timeoutMs: 30_000,
  });
  for (const mb of arg('--sizes-mb', '1,4,16,64').split(',').map(Number)) {
    const bytes = mb * 1024 * 1024;
    const buf = new Float32Array(bytes / 4).fill(rank + 1);
    const iters = Math.max(3, Math.min(20, Math.round(128 / mb)));
    await g.allReduce(buf); // warm-up
    const times: number[] = [];
    for (let i = 0; i < iters; i++) {
      await g.barrier();
      const t0 = process.hrtime.bigint();
      await g.allReduce(buf);
      times.push(Number(process.hrtime.bigint() - t0) / 1e9);
    }
    // The slowest rank defines the collective's time.
    const worst = await g.allReduce(Float64Array.from(times), 'max');
    const sorted = [...worst].sort((a, b) => a - b);
    const t = sorted[Math.floor(sorted.length / 2)];
    if (rank === 0) {
      console.log(JSON.stringify({ bench: 'allreduce', worldSize: W, bytes, iters, medianS: +t.toFixed(5), algBW_GBps: +(bytes / t / 1e9).toFixed(3), busBW_GBps: +(((2 * (W - 1)) / W) * bytes / t / 1e9).toFixed(3) }));
    }
  }
  await g.close();
}

/** Raw TCP over loopback: one sender, one receiver, 512 MiB in 4 MiB writes. */
async function tcpBaseline(): Promise<void> {
  const total = 512 * 1024 * 1024;
  const chunk = Buffer.alloc(4 * 1024 * 1024, 1);
  await new Promise<void>((resolve) => {
    const server = net.createServer((sock) => {
      let got = 0;
      const t0 = process.hrtime.bigint();
      sock.on('data', (d) => {
        got += d.length;
        if (got >= total) {
          const s = Number(process.hrtime.bigint() - t0) / 1e9;
          console.log(JSON.stringify({ bench: 'tcp-loopback', bytes: total, seconds: +s.toFixed(4), GBps: +(total / s / 1e9).toFixed(3) }));
          sock.destroy();
          server.close(() => resolve());
        }
      });
    });
    server.listen(0, '127.0.0.1', () => {
      const c = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1', () => {
        let sent = 0;
        const pump = () => {
          while (sent < total) {
            sent += chunk.length;
            if (!c.write(chunk)) return void c.once('drain', pump);
          }
          c.end();
        };
        pump();
      });
      c.on('error', () => {});
    });
  });
}

async function main(): Promise<void> {
  if (process.argv.includes('--worker')) return worker();
  await tcpBaseline();
  for (const W of arg('--worlds', '2,4').split(',').map(Number)) {
    const port = await freePort();
    const kids = [...Array(W).keys()].map((r) =>
      spawn(process.execPath, [__filename, '--worker', ...process.argv.slice(2)], {
        env: { ...process.env, RANK: String(r), WORLD_SIZE: String(W), MASTER_PORT: String(port), MOECAT_SECRET: 'bench' },
        stdio: ['ignore', 'inherit', 'inherit'],
      }),
    );
    const codes = await Promise.all(kids.map((k) => new Promise<number | null>((r) => k.once('exit', r))));
    if (codes.some((c) => c !== 0)) throw new Error(`W=${W}: a rank failed (${codes})`);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
