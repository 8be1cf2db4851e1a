/**
 * Runs scripts/reference/longcat_flash.py (PyTorch). Specs that need it skip, with the reason,
 * when no python3 with torch is found (CI installs Debian's python3-torch). MOECAT_PYTHON
 * names another interpreter.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

const SCRIPT = path.resolve('scripts/reference/longcat_flash.py');

function candidates(): string[] {
  if (process.env.MOECAT_PYTHON) return [process.env.MOECAT_PYTHON];
  // Debian's interpreter first: python3-torch installs into it, not into other pythons on PATH.
  return ['/usr/bin/python3', 'python3'];
}

let found: { python: string | null; why: string } | null = null;

/** The interpreter that imports torch, or null with the reason. */
export function torchPython(): { python: string | null; why: string } {
  if (found) return found;
  const tried: string[] = [];
  for (const py of candidates()) {
    const r = spawnSync(py, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8', timeout: 60000 });
    if (r.status === 0) return (found = { python: py, why: `torch ${r.stdout.trim()}` });
    tried.push(`${py}: ${r.error ? r.error.message : (r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`)}`);
  }
  return (found = { python: null, why: `no python3 with torch (${tried.join('; ')}); install python3-torch or set MOECAT_PYTHON` });
}

/** Runs the reference in `mode` on an exported directory; returns its JSON output. */
export function runReference<T>(mode: 'logits' | 'train', hfDir: string, input: unknown, workDir: string): T {
  const py = torchPython().python;
  if (!py) throw new Error(torchPython().why);
  const inFile = path.join(workDir, `${mode}-in.json`);
  const outFile = path.join(workDir, `${mode}-out.json`);
  fs.writeFileSync(inFile, JSON.stringify(input));
  const r = spawnSync(py, [SCRIPT, mode, hfDir, inFile, outFile], { encoding: 'utf8', timeout: 120000 });
  if (r.status !== 0) throw new Error(`reference ${mode} failed (${r.status}): ${r.stderr}`);
  return JSON.parse(fs.readFileSync(outFile, 'utf8')) as T;
}
