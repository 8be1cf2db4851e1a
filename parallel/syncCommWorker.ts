/**
 * The network side of parallel/syncComm.ts. Runs in a worker_thread, owns its own Group (own
 * rendezvous port) and serves all-to-all requests from the main thread strictly in order. Each
 * result (or error) is posted on the reply port, then the shared counter is bumped and notified
 * so a main thread blocked in Atomics.wait wakes up and reads it with receiveMessageOnPort.
 */
import { parentPort, workerData, MessagePort } from 'worker_threads';
import { Group } from './collectives';

interface Init {
  rank: number;
  worldSize: number;
  masterAddr: string;
  masterPort: number;
  secret: string;
  timeoutMs: number;
  delayMs: number;
  flag: SharedArrayBuffer;
  reply: MessagePort;
}

type Request = { type: 'a2a'; id: number; parts: Float32Array[] } | { type: 'close' } | { type: 'delay'; ms: number };

const init = workerData as Init;
const flag = new Int32Array(init.flag);
const reply = init.reply;
let delayMs = init.delayMs;

function answer(msg: unknown, transfer: ArrayBuffer[] = []): void {
  reply.postMessage(msg, transfer);
  Atomics.add(flag, 0, 1);
  Atomics.notify(flag, 0);
}

async function main(): Promise<void> {
  let group: Group;
  try {
    group = await Group.init({ rank: init.rank, worldSize: init.worldSize, masterAddr: init.masterAddr, masterPort: init.masterPort, secret: init.secret, timeoutMs: init.timeoutMs });
  } catch (e) {
    parentPort!.postMessage({ type: 'failed', error: (e as Error).message });
    return;
  }
  parentPort!.postMessage({ type: 'ready' });
  let chain: Promise<void> = Promise.resolve();
  let failed: string | null = null;
  parentPort!.on('message', (req: Request) => {
    if (req.type === 'delay') {
      delayMs = req.ms;
      return;
    }
    if (req.type === 'close') {
      chain = chain.then(async () => {
        await group.close().catch(() => undefined);
        parentPort!.postMessage({ type: 'closed' });
        parentPort!.close();
        reply.close();
      });
      return;
    }
    chain = chain.then(async () => {
      if (failed) return answer({ id: req.id, error: failed });
      try {
        if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
        const got = await group.allToAll(req.parts);
        // Received arrays may be views into pooled socket buffers: copy before transferring.
        const parts = got.map((g) => Float32Array.from(g));
        answer({ id: req.id, parts }, parts.map((p) => p.buffer as ArrayBuffer));
      } catch (e) {
        failed = (e as Error).message;
        answer({ id: req.id, error: failed });
      }
    });
  });
}

void main();
