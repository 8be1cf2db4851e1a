/**
 * `npm run demo`: the main job end to end on bundled real text.
 *   1. write the bundled corpora (Moby-Dick, State of the Union, TypeScript lib.*.d.ts)
 *   2. moecat prepare  -> data/prepared/demo (BPE tokenizer + Arrow shards + manifest)
 *   3. moecat train    -> runs/demo (configs/tiny.yaml, checkpoints)
 *   4. moecat generate -> text from the last checkpoint
 * Each step prints the command it runs, so the demo doubles as a tutorial.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { writeBundledCorpora } from './corpus/bundled';

const root = path.resolve(__dirname, '..', '..');
const cli = path.join(root, 'dist', 'cli', 'main.js');
const steps = process.env.MOECAT_DEMO_STEPS ?? '300';

function moecat(args: string[]): void {
  process.stderr.write(`\n$ moecat ${args.map((a) => (/\s/.test(a) ? JSON.stringify(a) : a)).join(' ')}\n`);
  const r = spawnSync(process.execPath, [cli, ...args], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    process.stderr.write(`demo: 'moecat ${args[0]}' failed with exit ${r.status}\n`);
    process.exit(r.status ?? 1);
  }
}

const corpus = path.join(root, 'data', 'corpus');
process.stderr.write(`writing bundled corpora to ${path.relative(root, corpus)}/ ...\n`);
for (const s of writeBundledCorpora(corpus, { maxBytesPerSource: 1_500_000 })) {
  process.stderr.write(`  ${s.name}: ${s.documents} documents, ${(s.bytes / 1e6).toFixed(2)} MB\n`);
}
moecat([
  'prepare',
  '--source', `prose=${path.join('data', 'corpus', 'prose')}`,
  '--source', `speeches=${path.join('data', 'corpus', 'speeches.jsonl')}`,
  '--source', `code=${path.join('data', 'corpus', 'code')}`,
  '--ext', '.txt', '.ts', '.jsonl',
  '--vocab-size', '512',
  '--sample-mb', '2',
  '--out', path.join('data', 'prepared', 'demo'),
  '--force',
]);
fs.rmSync(path.join(root, 'runs', 'demo'), { recursive: true, force: true });
moecat(['train', '--config', 'configs/tiny.yaml', '--out', path.join('runs', 'demo'), '--set', `train.steps=${steps}`]);
moecat(['generate', '--checkpoint', path.join('runs', 'demo'), '--prompt', 'Call me Ishmael. Some years ago', '--max-tokens', '80', '--temperature', '0.7', '--top-k', '40', '--seed', '7']);
moecat(['generate', '--checkpoint', path.join('runs', 'demo'), '--prompt', 'interface Array<T> {', '--max-tokens', '60', '--temperature', '0', '--seed', '7']);
process.stderr.write('\ndemo done: run directory runs/demo (metrics.jsonl, checkpoints/latest)\n');
