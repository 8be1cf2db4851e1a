/**
 * Data pipeline benchmark on the bundled real corpora: tokenizer training speed (MB/s at
 * vocab 8192 on a ~5 MB mix), `prepare` throughput (input MB/s, documents streamed, tokenized
 * and written as Arrow shards), shard load + verification time, and loader throughput
 * (packed tokens/s). Prints one JSON line per measurement. `node dist/scripts/bench/data.js`.
 */
import fs from 'fs';
import os from 'os';
import path from 'path';
import { writeBundledCorpora, BUNDLED_EXTS } from '../corpus/bundled';
import { Tokenizer } from '../../data/tokenizer';
import { prepareCorpus } from '../../data/prepare';
import { loadPrepared } from '../../data/prepared';
import { MixtureLoader } from '../../data/loader';

function emit(row: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(row) + '\n');
}

/** Wall clock and this process's CPU time: on a shared machine the CPU rate is the steadier one. */
function timer(): () => { s: number; cpu: number } {
  const w = performance.now();
  const c = process.cpuUsage();
  return () => {
    const d = process.cpuUsage(c);
    return { s: (performance.now() - w) / 1000, cpu: (d.user + d.system) / 1e6 };
  };
}

async function main(): Promise<void> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-bench-data-'));
  try {
    const raw = writeBundledCorpora(path.join(root, 'raw'));
    const inputMB = raw.reduce((a, s) => a + s.bytes, 0) / 1e6;

    // Tokenizer training on a ~5 MB mix: all prose + code, speeches to fill up.
    const texts: string[] = [];
    let bytes = 0;
    for (const s of raw) {
      const files = fs.statSync(s.path).isDirectory() ? fs.readdirSync(s.path).sort().map((f) => path.join(s.path, f)) : [s.path];
      for (const f of files) {
        const docs = f.endsWith('.jsonl') ? fs.readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { text: string }).text) : [fs.readFileSync(f, 'utf8')];
        for (const d of docs) {
          if (bytes >= 5e6) break;
          texts.push(d);
          bytes += Buffer.byteLength(d);
        }
      }
    }
    let t = timer();
    const tok = Tokenizer.train(texts, { vocabSize: 8192 });
    let r = t();
    emit({ bench: 'tokenizer', what: 'train', vocab: tok.vocabSize, mb: +(bytes / 1e6).toFixed(2), seconds: +r.s.toFixed(2), cpu_seconds: +r.cpu.toFixed(2), mb_per_s: +(bytes / 1e6 / r.s).toFixed(2), mb_per_cpu_s: +(bytes / 1e6 / r.cpu).toFixed(2) });
    const tokFile = path.join(root, 'tokenizer.json');
    fs.writeFileSync(tokFile, tok.toJSON());

    // Prepare the whole bundled corpus with that tokenizer.
    const out = path.join(root, 'prepared');
    t = timer();
    const m = await prepareCorpus({ sources: raw.map((x) => ({ name: x.name, path: x.path })), outDir: out, tokenizer: tokFile, exts: BUNDLED_EXTS });
    r = t();
    emit({ bench: 'prepare', what: 'tokenize+write', mb: +inputMB.toFixed(2), documents: m.totals.documents, tokens: m.totals.tokens, bytes_per_token: +(m.totals.bytes / m.totals.tokens).toFixed(2), seconds: +r.s.toFixed(2), cpu_seconds: +r.cpu.toFixed(2), mb_per_s: +(inputMB / r.s).toFixed(2), mb_per_cpu_s: +(inputMB / r.cpu).toFixed(2) });

    t = timer();
    const data = loadPrepared(out);
    r = t();
    emit({ bench: 'prepare', what: 'load+verify', tokens: m.totals.tokens, seconds: +r.s.toFixed(3), cpu_seconds: +r.cpu.toFixed(3), mtokens_per_s: +(m.totals.tokens / 1e6 / r.s).toFixed(1) });

    // Loader: packed microbatches from a staged mixture.
    for (const [seqLen, crossDocMask] of [[1024, false], [1024, true], [4096, false]] as [number, boolean][]) {
      const loader = new MixtureLoader({ dataDir: out, data, mixture: { sources: { prose: 0.4, speeches: 0.4, code: 0.2 } }, seed: 1, microBatchSize: 8, microBatches: 4, seqLen, crossDocMask });
      for (let w = 0; w < 20; w++) loader.microbatch(w, 0); // warm-up: JIT and epoch tables
      let tokens = 0;
      let step = 0;
      t = timer();
      const w0 = performance.now();
      while (performance.now() - w0 < 1500) {
        for (let mb = 0; mb < 4; mb++) tokens += loader.microbatch(step, mb).inputs.length;
        step++;
      }
      r = t();
      emit({ bench: 'loader', seq_len: seqLen, micro_batch: 8, cross_doc_mask: crossDocMask, steps: step, mtokens_per_s: +(tokens / 1e6 / r.s).toFixed(2), mtokens_per_cpu_s: +(tokens / 1e6 / r.cpu).toFixed(2) });
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
