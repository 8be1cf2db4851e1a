/**
 * Writes the generated Moby-Dick instruction set (data/sftData.ts) as OpenAI-style JSONL.
 * Usage: node dist/scripts/experiments/posttrain/makeSft.js <out.jsonl> [limit]
 */
import * as fs from 'fs';
import * as path from 'path';
import { instructionSet, mobyDickChapters, toJsonl } from '../../../data/sftData';

const out = process.argv[2] ?? 'runs/posttrain/sft.jsonl';
const limit = process.argv[3] !== undefined ? Number(process.argv[3]) : undefined;
const convs = instructionSet(mobyDickChapters(), { seed: 0, limit });
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, toJsonl(convs));
process.stderr.write(`wrote ${convs.length} conversations to ${out}\n`);
