/**
 * Fuzzing the file inputs: random truncations and bit flips of every file of a checkpoint, the
 * safetensors decoder fed damaged bytes directly (as if the checksums had been re-signed), and
 * random mutations of a config YAML. Each damaged input is refused with one typed error on one
 * line (or, for the decoders and configs, accepted when the damage left it valid); no other
 * error escapes, nothing hangs (each call is timed), and a refused `moecat train` leaves no run
 * directory behind. Counts go to stdout for docs/robustness.md.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import YAML from 'yaml';
import { MoecatError } from '../../core/errors';
import { decodeSafetensors } from '../../core/safetensors';
import { decodeModelWeights } from '../../model/weights';
import { loadTrainerCheckpoint } from '../../trainer/checkpointing';
import { loadTrainConfig, parseTrainConfig } from '../../trainer/config';
import { BACKEND, HONEST, moecat, tmpDir, trainedRun, copyRun } from './helpers';
import { selectBackend } from '../../core/backend';
import { Rand } from '../helpers/rand';


/** A copy of `b` with 1-3 random bits flipped, or cut to a random shorter length. */
function damage(b: Buffer, r: Rand, kind: 'flip' | 'truncate'): Buffer {
  if (kind === 'truncate') return Buffer.from(b.subarray(0, r.int(b.length)));
  const out = Buffer.from(b);
  for (let k = 1 + r.int(3); k > 0; k--) out[r.int(out.length)] ^= 1 << r.int(8);
  return out;
}

/** Runs f; returns 'ok' or the typed error's message; fails on an untyped error, a multi-line message or a slow call. */
function outcome(f: () => unknown, what: string, maxMs = 2000): 'ok' | string {
  const t0 = Date.now();
  try {
    f();
    return 'ok';
  } catch (e) {
    assert.ok(e instanceof MoecatError, `${what}: untyped ${String((e as Error).stack ?? e)}`);
    assert.ok(!e.message.includes('\n'), `${what}: more than one line: ${e.message}`);
    return e.message;
  } finally {
    assert.ok(Date.now() - t0 < maxMs, `${what}: took ${Date.now() - t0} ms`);
  }
}

const counts: string[] = [];
after(() => {
  if (counts.length) process.stdout.write(counts.map((c) => `      input fuzz: ${c}\n`).join(''));
});

describe('input fuzz: checkpoint files and config YAML', function () {
  this.timeout(300000);
  let run: string;
  before(async () => {
    await selectBackend(BACKEND);
    run = await trainedRun('honest', HONEST);
  });

  it('every truncation and bit flip of every checkpoint file is refused with one line naming the file', () => {
    const dir = path.join(copyRun(run, 'fuzz-ck'), 'checkpoints', 'step-00000012');
    const r = new Rand(77);
    const names = fs.readdirSync(dir).sort();
    let cases = 0;
    for (const name of names) {
      const file = path.join(dir, name);
      const original = fs.readFileSync(file);
      for (const kind of ['flip', 'truncate'] as const) {
        for (let i = 0; i < 100; i++) {
          fs.writeFileSync(file, damage(original, r, kind));
          const res = outcome(() => loadTrainerCheckpoint(dir), `${name} ${kind} ${i}`);
          assert.notEqual(res, 'ok', `${name} ${kind} ${i} was accepted`);
          // The message names the damaged file (or state.json, which its checksum protects).
          assert.ok(res.includes(name) || (name === 'state.json.sha256' && res.includes('state.json')), `${name} ${kind} ${i}: ${res}`);
          cases++;
        }
      }
      fs.writeFileSync(file, original);
    }
    assert.doesNotThrow(() => loadTrainerCheckpoint(dir));
    counts.push(`checkpoint files (${names.join(', ')}): ${cases} truncations and bit flips, ${cases} refused with one line naming the file`);
  });

  it('the safetensors decoders, fed damaged bytes directly, accept or refuse with one typed line', () => {
    const dir = path.join(run, 'checkpoints', 'step-00000012');
    const { config } = loadTrainerCheckpoint(dir);
    const r = new Rand(78);
    let refused = 0;
    let accepted = 0;
    for (const name of ['model.safetensors', 'optimizer.safetensors']) {
      const original = fs.readFileSync(path.join(dir, name));
      const headerEnd = 8 + Number(original.readBigUInt64LE(0));
      for (let i = 0; i < 500; i++) {
        // Half the flips land in the 8-byte length and the JSON header, where parsing happens.
        const b = i % 4 === 0 ? damage(original, r, 'truncate') : Buffer.from(original);
        if (i % 4 !== 0) for (let k = 1 + r.int(3); k > 0; k--) b[i % 2 ? r.int(headerEnd) : r.int(b.length)] ^= 1 << r.int(8);
        const res = outcome(() => (name === 'model.safetensors' ? decodeModelWeights(b, config.model, name) : decodeSafetensors(b, name)), `${name} ${i}`);
        if (res === 'ok') accepted++;
        else refused++;
      }
    }
    assert.ok(refused > 500, `${refused} refused`);
    counts.push(`safetensors decoders on damaged bytes (no checksum): ${refused + accepted} cases, ${refused} refused with one typed line, ${accepted} decoded (damage inside tensor data)`);
  });

  it('random mutations of a config YAML are accepted or refused with one ConfigError line', () => {
    const text = fs.readFileSync('configs/tiny.yaml', 'utf8');
    const lines = text.split('\n');
    const r = new Rand(79);
    const dir = tmpDir('fuzz-yaml');
    const file = path.join(dir, 'c.yaml');
    const tokens = ['-1', '0', '1e309', 'null', '~', '[]', '{}', 'true', '"x"', '3.5', '&a', '*a', '!!binary x', ':', '- ', '\t', '#', 'é', '99999999999999999999', 'NaN', '.inf'];
    let refused = 0;
    let accepted = 0;
    const kinds = new Map<string, number>();
    for (let i = 0; i < 1000; i++) {
      let mutated: string;
      const k = r.int(5);
      if (k === 0) {
        const b = Buffer.from(text);
        for (let j = 1 + r.int(3); j > 0; j--) b[r.int(b.length)] ^= 1 << r.int(8);
        mutated = b.toString('latin1');
      } else if (k === 1) {
        mutated = lines.filter(() => r.next() > 0.1).join('\n');
      } else if (k === 2) {
        const ls = [...lines];
        const at = r.int(ls.length);
        ls.splice(at, 0, ls[r.int(ls.length)]);
        mutated = ls.join('\n');
      } else if (k === 3) {
        // Replace a value with a random token.
        const ls = [...lines];
        const at = r.int(ls.length);
        ls[at] = ls[at].replace(/:\s.*$/, `: ${tokens[r.int(tokens.length)]}`);
        mutated = ls.join('\n');
      } else {
        mutated = text.slice(0, r.int(text.length));
      }
      fs.writeFileSync(file, mutated);
      const res = outcome(() => loadTrainConfig(file), `yaml ${i}`);
      if (res === 'ok') accepted++;
      else {
        refused++;
        const key = res.replace(/^[^:]*: /, '').replace(/[0-9]+/g, 'N').slice(0, 40);
        kinds.set(key, (kinds.get(key) ?? 0) + 1);
      }
    }
    assert.ok(refused > 300, `${refused} refused`);
    counts.push(`config YAML (configs/tiny.yaml): 1000 mutations, ${refused} refused with one ConfigError line (${kinds.size} distinct messages), ${accepted} still valid`);
  });

  it('`moecat train` with a damaged config exits 2 with one error line and creates no run directory', () => {
    const r = new Rand(80);
    const dir = tmpDir('fuzz-cli');
    const text = fs.readFileSync('configs/tiny.yaml', 'utf8');
    let refused = 0;
    for (let i = 0; refused < 12 && i < 200; i++) {
      const b = Buffer.from(text);
      for (let j = 1 + r.int(3); j > 0; j--) b[r.int(b.length)] ^= 1 << r.int(8);
      const cfg = path.join(dir, `c${i}.yaml`);
      fs.writeFileSync(cfg, b);
      // Only mutations the validator refuses are run through the CLI (a valid one would train).
      let parsed = false;
      try {
        parseTrainConfig(YAML.parse(b.toString('utf8'), { logLevel: 'error' }));
        parsed = true;
      } catch {
        /* refused: run it */
      }
      if (parsed) continue;
      const out = path.join(dir, `run${i}`);
      const res = moecat(['train', '--config', cfg, '--out', out]);
      assert.equal(res.status, 2, res.stderr);
      const errs = res.stderr.split('\n').filter((l) => l.startsWith('error:'));
      assert.equal(errs.length, 1, res.stderr);
      assert.ok(!res.stderr.includes('internal error'), res.stderr);
      assert.ok(!fs.existsSync(out), `run ${i}: the run directory was created`);
      refused++;
    }
    assert.equal(refused, 12);
    counts.push('`moecat train` on 12 refused config mutations: exit 2, one error line, no run directory');
  });
});
