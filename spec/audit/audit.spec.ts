import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { selectBackend } from '../../core/backend';
import { sha256Hex } from '../../core/hash';
import { ConfigError, DataError } from '../../core/errors';
import { decodeSafetensors, encodeSafetensors } from '../../core/safetensors';
import { auditRun } from '../../trainer/audit';
import { loadTrainerCheckpoint } from '../../trainer/checkpointing';
import { readMetrics } from '../../trainer/metrics';
import { flatLayout, views } from '../../model/flatParams';
import { paramHash, paramSpecs } from '../../model/params';
import { BACKEND, copyRun, HONEST, moecat, tmpDir, trainedRun } from './helpers';

/**
 * Bumps one float32 of `tensor` in a checkpoint's model.safetensors by one ULP and re-signs the
 * file in state.json, so that checksum verification passes. With `forgeHash` the state's own
 * param_hash is rewritten to match the altered weights too.
 */
function corruptOneUlp(ckDir: string, tensor: string, index: number, forgeHash: boolean): { before: number; after: number } {
  const file = path.join(ckDir, 'model.safetensors');
  const st = decodeSafetensors(fs.readFileSync(file));
  const t = st.tensors.get(tensor)!;
  const f32 = t.data as Float32Array;
  const bits = new Int32Array(f32.buffer, f32.byteOffset, f32.length);
  const before = f32[index];
  bits[index] += 1; // next representable float32 away from zero (same sign)
  const after = f32[index];
  const bytes = encodeSafetensors(st.tensors, st.metadata);
  fs.writeFileSync(file, bytes);
  const statePath = path.join(ckDir, 'state.json');
  const state = JSON.parse(fs.readFileSync(statePath, 'utf8')) as { files: Record<string, string>; param_hash: string };
  state.files['model.safetensors'] = sha256Hex(bytes);
  writeState(ckDir, state);
  if (forgeHash) {
    const ck = loadTrainerCheckpoint(ckDir);
    const layout = flatLayout(paramSpecs(ck.config.model));
    state.param_hash = paramHash(layout.specs, views(layout, ck.state.params));
    writeState(ckDir, state);
  }
  return { before, after };
}

/** Rewrites state.json and its own checksum, as a thorough forger would. */
function writeState(ckDir: string, state: unknown): void {
  const text = JSON.stringify(state, null, 2) + '\n';
  fs.writeFileSync(path.join(ckDir, 'state.json'), text);
  fs.writeFileSync(path.join(ckDir, 'state.json.sha256'), sha256Hex(Buffer.from(text)) + '\n');
}

/** Re-signs one rewritten file of a checkpoint in state.json (checksum and size). */
function resign(ckDir: string, name: string): void {
  const bytes = fs.readFileSync(path.join(ckDir, name));
  const state = JSON.parse(fs.readFileSync(path.join(ckDir, 'state.json'), 'utf8')) as { files: Record<string, string>; file_bytes: Record<string, number> };
  state.files[name] = sha256Hex(bytes);
  state.file_bytes[name] = bytes.length;
  writeState(ckDir, state);
}

/** Flips bit `bit` of byte `at` of a file. */
function flipBit(file: string, at: number, bit: number): void {
  const b = fs.readFileSync(file);
  b[at] ^= 1 << bit;
  fs.writeFileSync(file, b);
}

/** Offset of the first byte of tensor data in a safetensors file (after the JSON header). */
function tensorDataStart(file: string): number {
  const b = fs.readFileSync(file);
  return 8 + Number(b.readBigUInt64LE(0));
}

/** A big lm_head weight: every token's logits read it, so the next step's loss bits move. */
function bigLmHeadIndex(ckDir: string): number {
  const t = decodeSafetensors(fs.readFileSync(path.join(ckDir, 'model.safetensors'))).tensors.get('lm_head.weight')!;
  const d = t.data as Float32Array;
  let best = 0;
  for (let i = 1; i < d.length; i++) if (Math.abs(d[i]) > Math.abs(d[best])) best = i;
  return best;
}

describe('moecat audit', function () {
  this.timeout(300000);
  let run: string;
  before(async () => {
    await selectBackend(BACKEND);
    run = await trainedRun('honest', HONEST);
  });

  it('passes on an honest run, comparing every recomputed fingerprint and parameter hash', async () => {
    const res = await auditRun(run, { from: 5, to: 12 });
    assert.equal(res.ok, true, JSON.stringify(res.firstDivergence));
    assert.equal(res.firstDivergence, undefined);
    assert.equal(res.start.step, 4);
    assert.match(String(res.start.checkpoint), /step-00000004$/);
    assert.deepEqual([res.from, res.to, res.checked], [5, 12, 8]);
    // checkpoint 4's own hash, recorded hashes at steps 5, 10, 12, checkpoints 8 and 12 against the recomputation
    assert.equal(res.hashesChecked, 6);
    assert.equal(res.checkpointsChecked, 3);
    assert.equal(res.recordedBackend, BACKEND);
  });

  it('starts from initialisation when no checkpoint precedes the range', async () => {
    const res = await auditRun(run, { from: 1, to: 3 });
    assert.equal(res.ok, true);
    assert.deepEqual(res.start, { step: 0, checkpoint: null });
    assert.equal(res.checked, 3);
  });

  it('catches a checkpoint altered by one ULP in one weight and re-checksummed, at the checkpoint', async () => {
    const bad = copyRun(run, 'ulp');
    const ck = path.join(bad, 'checkpoints', 'step-00000008');
    const { before, after } = corruptOneUlp(ck, 'lm_head.weight', bigLmHeadIndex(ck), false);
    assert.notEqual(before, after);
    assert.ok(Math.abs(after - before) <= Math.abs(before) * 2 ** -23, 'one ULP');
    assert.doesNotThrow(() => loadTrainerCheckpoint(ck), 'checksums still verify');
    const res = await auditRun(bad, { from: 9, to: 12 });
    assert.equal(res.ok, false);
    assert.equal(res.firstDivergence!.step, 8);
    assert.equal(res.firstDivergence!.what, 'checkpoint_param_hash');
    assert.notEqual(res.firstDivergence!.expected, res.firstDivergence!.got);
  });

  it('catches a consistently forged checkpoint (weights, checksum and param_hash) at the first recomputed step', async () => {
    const bad = copyRun(run, 'forged');
    const ck = path.join(bad, 'checkpoints', 'step-00000008');
    corruptOneUlp(ck, 'lm_head.weight', bigLmHeadIndex(ck), true);
    const res = await auditRun(bad, { from: 9, to: 12 });
    assert.equal(res.ok, false);
    assert.equal(res.firstDivergence!.step, 9);
    assert.equal(res.firstDivergence!.what, 'fingerprint');
    const recorded = readMetrics(path.join(run, 'metrics.jsonl')).find((m) => m.step === 9)!;
    assert.equal(res.firstDivergence!.expected, recorded.fingerprint);
  });

  it('catches a flipped byte in the tensor data of the final checkpoint, naming step and file', async () => {
    const bad = copyRun(run, 'final-byte');
    const file = path.join(bad, 'checkpoints', 'step-00000012', 'model.safetensors');
    flipBit(file, tensorDataStart(file) + 17, 0);
    const res = await auditRun(bad, { from: 5, to: 12 });
    assert.equal(res.ok, false);
    assert.deepEqual([res.firstDivergence!.step, res.firstDivergence!.what, res.firstDivergence!.file], [12, 'checkpoint_file', 'model.safetensors']);
    assert.match(res.firstDivergence!.got, /model\.safetensors fails its sha256 check/);
    assert.equal(res.checked, 0, 'refused before recomputing');
  });

  it('catches a flipped bit in any file of any checkpoint in the range', async () => {
    const bad = copyRun(run, 'any-bit');
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    let cases = 0;
    for (const step of [4, 8, 12]) {
      const dir = path.join(bad, 'checkpoints', `step-${String(step).padStart(8, '0')}`);
      const names = fs.readdirSync(dir).sort();
      assert.ok(names.includes('model.safetensors') && names.includes('optimizer.safetensors') && names.includes('state.json') && names.includes('state.json.sha256'), names.join());
      for (const name of names) {
        const file = path.join(dir, name);
        const original = fs.readFileSync(file);
        for (let k = 0; k < 2; k++) {
          flipBit(file, rand(original.length), rand(8));
          const res = await auditRun(bad, { from: 5, to: 12 });
          assert.equal(res.ok, false, `${step}/${name}`);
          assert.equal(res.firstDivergence!.step, step, `${step}/${name}: ${JSON.stringify(res.firstDivergence)}`);
          assert.equal(res.firstDivergence!.what, 'checkpoint_file');
          // A changed state.json.sha256 can only say that it and state.json disagree.
          if (name === 'state.json.sha256') assert.match(res.firstDivergence!.file!, /^state\.json/);
          else assert.equal(res.firstDivergence!.file, name);
          fs.writeFileSync(file, original);
          cases++;
        }
      }
    }
    assert.ok(cases >= 24, `${cases} cases`);
    assert.equal((await auditRun(bad, { from: 5, to: 12 })).ok, true, 'restored run audits clean');
  });

  it('catches re-checksummed changes to a later checkpoint: weights, optimizer moments, state.json', async () => {
    const weights = copyRun(run, 'resigned-weights');
    corruptOneUlp(path.join(weights, 'checkpoints', 'step-00000012'), 'lm_head.weight', 3, true);
    let res = await auditRun(weights, { from: 9, to: 12 });
    assert.equal(res.ok, false);
    assert.deepEqual([res.firstDivergence!.step, res.firstDivergence!.what, res.firstDivergence!.file], [12, 'checkpoint_content', 'model.safetensors']);

    const opt = copyRun(run, 'resigned-opt');
    const ck8 = path.join(opt, 'checkpoints', 'step-00000008');
    const of = path.join(ck8, 'optimizer.safetensors');
    const st = decodeSafetensors(fs.readFileSync(of));
    (st.tensors.get('exp_avg')!.data as Float32Array)[7] += 1;
    fs.writeFileSync(of, encodeSafetensors(st.tensors, st.metadata));
    resign(ck8, 'optimizer.safetensors');
    res = await auditRun(opt, { from: 5, to: 12 });
    assert.equal(res.ok, false);
    assert.deepEqual([res.firstDivergence!.step, res.firstDivergence!.what, res.firstDivergence!.file], [8, 'checkpoint_content', 'optimizer.safetensors']);

    const state = copyRun(run, 'resigned-state');
    const ck12 = path.join(state, 'checkpoints', 'step-00000012');
    const s = JSON.parse(fs.readFileSync(path.join(ck12, 'state.json'), 'utf8')) as { tokens: number };
    s.tokens += 1;
    writeState(ck12, s);
    res = await auditRun(state, { from: 9, to: 12 });
    assert.equal(res.ok, false);
    assert.deepEqual([res.firstDivergence!.step, res.firstDivergence!.what, res.firstDivergence!.file], [12, 'checkpoint_content', "state.json 'tokens'"]);
    // The same change in the starting checkpoint is checked against the recorded token count.
    const start8 = path.join(state, 'checkpoints', 'step-00000008');
    const s8 = JSON.parse(fs.readFileSync(path.join(start8, 'state.json'), 'utf8')) as { tokens: number };
    s8.tokens -= 1;
    writeState(start8, s8);
    res = await auditRun(state, { from: 9, to: 11 });
    assert.equal(res.ok, false);
    assert.deepEqual([res.firstDivergence!.step, res.firstDivergence!.what, res.firstDivergence!.file], [8, 'checkpoint_content', "state.json 'tokens'"]);
  });

  it('refuses bad input with typed errors: missing run, no metrics, range outside the record', async () => {
    await assert.rejects(auditRun(path.join(tmpDir('none'), 'missing')), (e: unknown) => e instanceof DataError && /no such run directory/.test(e.message));
    await assert.rejects(auditRun(tmpDir('empty')), (e: unknown) => e instanceof DataError && /no metrics\.jsonl/.test(e.message));
    await assert.rejects(auditRun(run, { from: 3, to: 40 }), (e: unknown) => e instanceof ConfigError && /outside what was recorded \(steps 1\.\.12\)/.test(e.message));
    await assert.rejects(auditRun(run, { from: 8, to: 4 }), (e: unknown) => e instanceof ConfigError && /--from 8 is after --to 4/.test(e.message));
    await assert.rejects(auditRun(run, { from: 0 }), (e: unknown) => e instanceof ConfigError && /--from must be a positive integer/.test(e.message));
  });

  it('the CLI exits 0 when identical, 1 naming the first diverging step, 2 on bad input', async () => {
    const ok = moecat(['audit', run, '--from', '9', '--to', '12']);
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /OK: steps 9\.\.12 identical/);
    const bad = copyRun(run, 'cli-forged');
    corruptOneUlp(path.join(bad, 'checkpoints', 'step-00000008'), 'lm_head.weight', bigLmHeadIndex(path.join(bad, 'checkpoints', 'step-00000008')), true);
    const diverged = moecat(['audit', bad, '--from', '9']);
    assert.equal(diverged.status, 1, diverged.stderr);
    assert.match(diverged.stdout, /DIVERGED after 0 identical step\(s\): step 9: the step fingerprint/);
    const missing = moecat(['audit', path.join(bad, 'nope')]);
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /no such run directory/);
    const range = moecat(['audit', run, '--to', '99']);
    assert.equal(range.status, 2);
    assert.match(range.stderr, /outside what was recorded/);
    const flipped = copyRun(run, 'cli-flipped');
    const file = path.join(flipped, 'checkpoints', 'step-00000012', 'model.safetensors');
    flipBit(file, tensorDataStart(file) + 5, 3);
    const caught = moecat(['audit', flipped]);
    assert.equal(caught.status, 1, caught.stderr);
    assert.match(caught.stdout, /DIVERGED after 0 identical step\(s\): step 12 \(model\.safetensors\): a file of the checkpoint at this step fails verification/);
  });
});
