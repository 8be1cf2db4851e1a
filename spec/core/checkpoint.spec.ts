import { strict as assert } from 'assert';
import { spawn, spawnSync } from 'child_process';
import fs from 'fs';
import os from 'os';
import path from 'path';
import {
  CheckpointFiles,
  latestCheckpoint,
  listCheckpoints,
  loadCheckpoint,
  resolveCheckpoint,
  stepDirName,
  writeCheckpoint,
} from '../../core/checkpoint';
import { CheckpointError } from '../../core/errors';
import { sha256Hex } from '../../core/hash';
import { RngStream } from '../../core/rng';
import { encodeSafetensors } from '../../core/safetensors';
import { checkpointFilesFor } from '../fixtures/checkpoint-writer';

function filesFor(step: number): CheckpointFiles {
  const w = new Float32Array(1000).map((_, i) => step + i / 1000);
  return {
    'model.safetensors': encodeSafetensors(new Map([['w', { dtype: 'F32' as const, shape: [10, 100], data: w }]])),
    'optimizer.safetensors': encodeSafetensors(new Map([['exp_avg', { dtype: 'F32' as const, shape: [1000], data: w.map((x) => x * 2) }]])),
    'config.yaml': `model:\n  dim: ${step}\n`,
    'tokenizer.json': JSON.stringify({ vocab: ['a', 'b'], step }),
  };
}

function save(run: string, step: number, keepLast?: number): string {
  return writeCheckpoint(run, step, filesFor(step), { step, tokens: step * 64 }, keepLast === undefined ? {} : { keepLast });
}

function expectCkError(fn: () => unknown, ...parts: string[]): CheckpointError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof CheckpointError, `expected CheckpointError, got ${String(e)}`);
    for (const p of parts) assert.ok(e.message.includes(p), `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(p)}`);
    return e;
  }
  assert.fail('expected a CheckpointError');
}

/** A pid that certainly belongs to no running process: a child that has already exited. */
function deadPid(): number {
  return spawnSync(process.execPath, ['-e', '']).pid!;
}

describe('core/checkpoint', () => {
  let tmp: string;
  let run: string;
  let ck: string;
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-ckpt-'));
    run = path.join(tmp, 'run');
    ck = path.join(run, 'checkpoints');
  });
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('round-trips files and state, recording the sha256 and size of every file', () => {
    const dir = writeCheckpoint(run, 100, filesFor(100), { step: 100, tokens: 6400, rng: { key: 'k' } });
    assert.equal(dir, path.join(ck, 'step-00000100'));
    const got = loadCheckpoint(dir);
    assert.equal(got.dir, dir);
    const want = filesFor(100);
    assert.deepEqual([...got.files.keys()].sort(), Object.keys(want).sort());
    for (const [n, v] of Object.entries(want)) assert.ok(got.files.get(n)!.equals(Buffer.from(v)), n);
    assert.equal(got.state.step, 100);
    assert.equal(got.state.tokens, 6400);
    assert.deepEqual(got.state.rng, { key: 'k' });
    assert.equal(got.state.format_version, 1);
    const onDisk = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8')) as { files: Record<string, string>; file_bytes: Record<string, number> };
    for (const [n, v] of Object.entries(want)) {
      assert.equal(onDisk.files[n], sha256Hex(Buffer.from(v)), n);
      assert.equal(onDisk.file_bytes[n], Buffer.byteLength(v), n);
    }
  });

  it('points checkpoints/latest at the new directory with a relative link', () => {
    save(run, 1);
    save(run, 2);
    assert.equal(fs.readlinkSync(path.join(ck, 'latest')), 'step-00000002');
    assert.deepEqual(fs.readdirSync(ck).sort(), ['latest', 'step-00000001', 'step-00000002']);
  });

  it('resolves a checkpoint dir, the latest link, the checkpoints dir and the run dir', () => {
    const d1 = save(run, 1);
    const d2 = save(run, 2);
    assert.equal(resolveCheckpoint(d1), d1);
    assert.equal(resolveCheckpoint(path.join(ck, 'latest')), d2);
    assert.equal(resolveCheckpoint(ck), d2);
    assert.equal(resolveCheckpoint(run), d2);
    assert.equal(loadCheckpoint(run).state.step, 2);
  });

  it('resolving an empty dir, a run without checkpoints or a nonexistent path is a clear error', () => {
    const empty = path.join(tmp, 'empty');
    fs.mkdirSync(empty);
    expectCkError(() => resolveCheckpoint(empty), 'no checkpoint found', empty);
    fs.mkdirSync(ck, { recursive: true });
    expectCkError(() => resolveCheckpoint(run), 'no checkpoints yet', ck);
    const nowhere = path.join(tmp, 'nowhere');
    expectCkError(() => loadCheckpoint(nowhere), 'no such file or directory', nowhere);
  });

  it('refuses a checkpoint whose model.safetensors has one flipped byte, naming the file', () => {
    const dir = save(run, 3);
    const file = path.join(dir, 'model.safetensors');
    const b = fs.readFileSync(file);
    b[b.length - 5] ^= 0x01;
    fs.writeFileSync(file, b);
    expectCkError(() => loadCheckpoint(dir), 'model.safetensors', 'sha256');
  });

  it('refuses a truncated file, naming it', () => {
    const dir = save(run, 3);
    const file = path.join(dir, 'optimizer.safetensors');
    fs.truncateSync(file, 100);
    expectCkError(() => loadCheckpoint(dir), 'optimizer.safetensors is truncated', '100 of');
  });

  it('refuses a checkpoint with a listed file missing, naming it', () => {
    const dir = save(run, 3);
    fs.unlinkSync(path.join(dir, 'tokenizer.json'));
    expectCkError(() => loadCheckpoint(dir), 'tokenizer.json is missing');
  });

  it('catches any change to state.json through state.json.sha256', () => {
    const dir = save(run, 3);
    const file = path.join(dir, 'state.json');
    const text = fs.readFileSync(file, 'utf8');
    // A change that keeps the JSON valid and every listed file intact.
    fs.writeFileSync(file, text.replace('"step": 3', '"step":  3'));
    expectCkError(() => loadCheckpoint(dir), 'state.json fails its sha256 check', file);
    fs.writeFileSync(file, text);
    assert.doesNotThrow(() => loadCheckpoint(dir));
    fs.writeFileSync(path.join(dir, 'state.json.sha256'), 'not a digest\n');
    expectCkError(() => loadCheckpoint(dir), 'state.json.sha256 is not a sha256 hex digest');
  });

  it('refuses a corrupted state.json with a clear error (a checkpoint without state.json.sha256)', () => {
    const dir = save(run, 3);
    const file = path.join(dir, 'state.json');
    fs.unlinkSync(path.join(dir, 'state.json.sha256'));
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').slice(0, 40));
    expectCkError(() => loadCheckpoint(dir), 'state.json is not valid JSON', file);
  });

  it('refuses a state.json whose step disagrees with its directory name', () => {
    const dir = save(run, 3);
    const file = path.join(dir, 'state.json');
    const st = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
    fs.unlinkSync(path.join(dir, 'state.json.sha256'));
    fs.writeFileSync(file, JSON.stringify({ ...st, step: 4 }));
    expectCkError(() => loadCheckpoint(dir), 'does not match the directory name');
  });

  it('loading a run whose latest checkpoint is damaged refuses instead of silently using an older one', () => {
    save(run, 1);
    const d2 = save(run, 2);
    fs.truncateSync(path.join(d2, 'model.safetensors'), 10);
    expectCkError(() => loadCheckpoint(run), 'model.safetensors is truncated');
  });

  it('keep-last-N keeps the newest N checkpoints', () => {
    for (let s = 1; s <= 6; s++) save(run, s * 10, 3);
    assert.deepEqual(listCheckpoints(run).map((c) => c.step), [40, 50, 60]);
    assert.equal(resolveCheckpoint(run), path.join(ck, 'step-00000060'));
    assert.ok(!fs.readdirSync(ck).some((e) => e.startsWith('.')), 'no leftovers');
  });

  it('keep-last-N never deletes the checkpoint latest points to, even when it is the oldest', () => {
    save(run, 10);
    save(run, 20);
    save(run, 30);
    // A rollback re-saves an earlier step: it becomes latest although two newer ones exist.
    save(run, 5, 2);
    assert.deepEqual(listCheckpoints(run).map((c) => c.step), [5, 20, 30]);
    assert.equal(loadCheckpoint(run).state.step, 5);
  });

  it('re-saving an existing step replaces it and leaves nothing behind', () => {
    save(run, 7);
    const other = { ...filesFor(7), 'config.yaml': 'replaced: true\n' };
    writeCheckpoint(run, 7, other, { step: 7, again: true });
    const got = loadCheckpoint(run);
    assert.equal(got.files.get('config.yaml')!.toString(), 'replaced: true\n');
    assert.equal(got.state.again, true);
    assert.deepEqual(fs.readdirSync(ck).sort(), ['latest', 'step-00000007']);
  });

  it('with latest missing or dangling, a run resolves to the newest directory that verifies', () => {
    save(run, 1);
    save(run, 2);
    const d3 = save(run, 3);
    fs.truncateSync(path.join(d3, 'model.safetensors'), 10);
    fs.unlinkSync(path.join(ck, 'latest'));
    assert.equal(resolveCheckpoint(run), path.join(ck, 'step-00000002'));
    fs.symlinkSync('step-00000099', path.join(ck, 'latest'));
    assert.equal(loadCheckpoint(run).state.step, 2);
    assert.equal(resolveCheckpoint(path.join(ck, 'latest')), path.join(ck, 'step-00000002'));
    assert.equal(latestCheckpoint(run), path.join(ck, 'step-00000002'));
  });

  it('leftovers of a crashed writer are ignored by readers and removed by the next writer; a live writer\'s are kept', () => {
    save(run, 1);
    const dead = deadPid();
    const crashedTmp = path.join(ck, `.tmp-step-00000002-${dead}`);
    fs.mkdirSync(crashedTmp);
    fs.writeFileSync(path.join(crashedTmp, 'model.safetensors'), 'partial');
    fs.symlinkSync('step-00000002', path.join(ck, `latest.tmp-${dead}`));
    const liveTmp = path.join(ck, `.tmp-step-00000009-${process.ppid}`);
    fs.mkdirSync(liveTmp);
    assert.equal(loadCheckpoint(run).state.step, 1);
    assert.deepEqual(listCheckpoints(run).map((c) => c.step), [1]);
    save(run, 2);
    assert.ok(!fs.existsSync(crashedTmp));
    assert.ok(!fs.existsSync(path.join(ck, `latest.tmp-${dead}`)));
    assert.ok(fs.existsSync(liveTmp));
  });

  it('a crash while replacing a step leaves it loadable, and the next writer puts it back', () => {
    save(run, 1);
    const d2 = save(run, 2);
    // Crash right after the old step-2 was moved aside, before the new one was renamed in.
    const aside = path.join(ck, `.old-step-00000002-${deadPid()}`);
    fs.renameSync(d2, aside);
    const got = loadCheckpoint(run);
    assert.equal(got.state.step, 2);
    assert.equal(got.dir, aside);
    save(run, 3);
    assert.deepEqual(listCheckpoints(run).map((c) => c.step), [1, 2, 3]);
    assert.equal(loadCheckpoint(d2).state.step, 2);
  });

  it('listCheckpoints and latestCheckpoint: empty for a new run, oldest-first list, resolved latest', () => {
    assert.equal(latestCheckpoint(path.join(tmp, 'nope')), null);
    assert.deepEqual(listCheckpoints(path.join(tmp, 'nope')), []);
    fs.mkdirSync(ck, { recursive: true });
    assert.equal(latestCheckpoint(run), null);
    save(run, 12);
    save(run, 3);
    assert.deepEqual(listCheckpoints(run), [
      { step: 3, dir: path.join(ck, 'step-00000003') },
      { step: 12, dir: path.join(ck, 'step-00000012') },
    ]);
    assert.equal(latestCheckpoint(run), path.join(ck, 'step-00000003'));
    assert.equal(stepDirName(123456789), 'step-123456789');
  });

  it('latestCheckpoint throws rather than returning null when checkpoints exist but none verifies', () => {
    const d = save(run, 1);
    fs.unlinkSync(path.join(ck, 'latest'));
    fs.unlinkSync(path.join(d, 'config.yaml'));
    expectCkError(() => latestCheckpoint(run), 'no checkpoint in this directory verifies', 'config.yaml is missing');
  });

  it('refuses bad writer input: a state.step that differs, a path-like file name, keepLast 0', () => {
    expectCkError(() => writeCheckpoint(run, 5, filesFor(5), { step: 4 }), 'differs');
    expectCkError(() => writeCheckpoint(run, 5, { '../x': 'a' }, { step: 5 }), "invalid checkpoint file name '../x'");
    expectCkError(() => writeCheckpoint(run, 5, { 'state.json': '{}' }, { step: 5 }), 'invalid checkpoint file name');
    expectCkError(() => writeCheckpoint(run, 5, filesFor(5), { step: 5 }, { keepLast: 0 }), 'keepLast');
    expectCkError(() => writeCheckpoint(run, -1, filesFor(5), { step: -1 }), 'non-negative integer');
  });

  it('a writer killed with SIGKILL at random moments always leaves a loadable, verified checkpoint', async function () {
    this.timeout(60_000);
    const fixture = path.join(__dirname, '..', 'fixtures', 'checkpoint-writer.js');
    assert.ok(fs.existsSync(fixture), `compiled fixture expected at ${fixture}`);
    writeCheckpoint(run, 0, checkpointFilesFor(0), { step: 0 });
    // Kill delays come from a named seeded stream, like every other draw in the project.
    const delays = RngStream.of(20250901, 'spec:checkpoint-kill-delays');
    const rand = () => delays.next();
    const started = Date.now();
    let kills = 0;
    let lastStep = 0;
    let sawPartialWrite = 0;
    while (kills < 20 && Date.now() - started < 25_000) {
      const child = spawn(process.execPath, [fixture, run, '3'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      // Kill at a seeded moment after the writer is up, so the kills spread over its write loop.
      // Every fourth writer first completes a checkpoint, so progress is guaranteed even on an
      // overloaded machine where a short random delay never reaches the end of a write.
      const want = kills % 4 === 3 ? /wrote/ : /ready/;
      await Promise.race([
        new Promise<void>((r) => {
          const check = () => (want.test(out) ? r() : setTimeout(check, 5));
          check();
        }),
        exited,
      ]);
      await new Promise((r) => setTimeout(r, rand() * 450));
      child.kill('SIGKILL');
      const { signal } = await exited; // reaped: its pid is now dead for the next writer's cleanup
      assert.equal(signal, 'SIGKILL', `writer exited on its own: ${stderr}`);
      kills++;
      if (fs.readdirSync(ck).some((e) => e.startsWith('.tmp-') || e.startsWith('.old-') || e.startsWith('latest.tmp-') || e.startsWith('.del-'))) sawPartialWrite++;
      const got = loadCheckpoint(run);
      const step = got.state.step;
      assert.ok(step >= lastStep, `loaded step ${step} went back from ${lastStep}`);
      assert.ok(got.files.get('model.safetensors')!.equals(checkpointFilesFor(step)['model.safetensors'] as Buffer), `model of step ${step} is what that step wrote`);
      lastStep = step;
    }
    // 20 kills normally take ~10 s; the 25 s cap only bites on a badly overloaded machine.
    assert.ok(kills >= 12, `only ${kills} kills in the time budget`);
    assert.ok(lastStep > 0, 'the writers made progress');
    assert.ok(sawPartialWrite > 0, 'at least one kill landed in the middle of a write');
  });
});
