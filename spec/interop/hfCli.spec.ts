/**
 * The `moecat export` / `moecat import` commands end to end: an imported run generates the same
 * greedy text as the checkpoint it came from, serves the same chat completion, and starts a
 * `train --init-from` run; bad
 * arguments get one `error:` line and exit status 2.
 */
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import YAML from 'yaml';
import { selectBackend } from '../../core/backend';
import { interopConfig, tmpDir, writeCheckpointAfter } from './fixtures';
import { loadForServing } from '../../inference/engineLoad';
import { startServer } from '../../inference/server';

const BACKEND = process.env.MOECAT_TEST_BACKEND ?? 'wasm';

function moecat(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const main = path.join(__dirname, '..', '..', 'cli', 'main.js');
  const r = spawnSync(process.execPath, [main, ...args], { encoding: 'utf8', env: { ...process.env, MOECAT_BACKEND: BACKEND }, timeout: 120000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function errorLine(r: { status: number | null; stderr: string }): string {
  assert.equal(r.status, 2, r.stderr);
  const lines = r.stderr.split('\n').filter((l) => l.startsWith('error:'));
  assert.equal(lines.length, 1, r.stderr);
  return lines[0];
}

describe('moecat export / import (CLI)', function () {
  this.timeout(300000);
  let tmp: string;
  before(async () => {
    await selectBackend(BACKEND as 'wasm');
    tmp = tmpDir('hfcli');
    (await writeCheckpointAfter(path.join(tmp, 'run'), 2)).dispose();
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('export -> import -> generate gives the same greedy text; train --init-from starts from the import', () => {
    const hf = path.join(tmp, 'hf');
    const e = moecat(['export', '--checkpoint', path.join(tmp, 'run'), '--format', 'hf', '--out', hf]);
    assert.equal(e.status, 0, e.stderr);
    assert.match(e.stdout, /exported .* to .*config\.json/);
    const i = moecat(['import', '--hf', hf, '--out', path.join(tmp, 'imported')]);
    assert.equal(i.status, 0, i.stderr);
    assert.match(i.stdout, /continue with: moecat train --config YOUR\.yaml --init-from /);
    const gen = (ck: string) => moecat(['generate', '--checkpoint', ck, '--prompt', 'the cat', '--max-tokens', '6', '--temperature', '0']);
    const a = gen(path.join(tmp, 'run'));
    const b = gen(path.join(tmp, 'imported'));
    assert.equal(a.status, 0, a.stderr);
    assert.equal(b.status, 0, b.stderr);
    assert.equal(b.stdout, a.stdout);
    const { raw } = interopConfig();
    const cfgFile = path.join(tmp, 'child.yaml');
    fs.writeFileSync(cfgFile, YAML.stringify({ ...raw, train: { steps: 2, checkpointEvery: 0, paramHashEvery: 1 }, optim: { lr: 0.001, schedule: { type: 'constant' } } }));
    const t = moecat(['train', '--config', cfgFile, '--out', path.join(tmp, 'child'), '--init-from', path.join(tmp, 'imported')]);
    assert.equal(t.status, 0, t.stderr);
    const state = JSON.parse(fs.readFileSync(path.join(tmp, 'child', 'checkpoints', 'latest', 'state.json'), 'utf8'));
    assert.equal(state.step, 2);
    assert.equal(state.lineage.parent_step, 0);
  });

  it('serve: the imported run answers a chat completion exactly as the original checkpoint', async () => {
    const ask = async (ck: string): Promise<string> => {
      const { model, tokenizer } = loadForServing(ck);
      const srv = await startServer({ model, tokenizer, port: 0, modelId: 'm' });
      try {
        const res = await fetch(`${srv.url}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'the cat' }], max_tokens: 6, temperature: 0 }),
        });
        assert.equal(res.status, 200);
        const body = (await res.json()) as { choices: { message: { content: string } }[]; usage: { completion_tokens: number } };
        assert.ok(body.usage.completion_tokens > 0);
        return body.choices[0].message.content;
      } finally {
        await srv.close();
        model.store.dispose();
      }
    };
    // `imported` is the run the CLI made in the test above (mocha runs them in order).
    assert.ok(fs.existsSync(path.join(tmp, 'imported')), 'the CLI import ran');
    assert.equal(await ask(path.join(tmp, 'imported')), await ask(path.join(tmp, 'run')));
  });

  it('refuses bad arguments with one error line and exit status 2', () => {
    assert.match(errorLine(moecat(['export', '--checkpoint', path.join(tmp, 'run'), '--format', 'onnx', '--out', path.join(tmp, 'x')])), /^error: --format: unknown format "onnx"/);
    assert.match(errorLine(moecat(['export', '--checkpoint', path.join(tmp, 'run'), '--out', path.join(tmp, 'y'), '--max-shard-mb', '0'])), /^error: --max-shard-mb:/);
    assert.match(errorLine(moecat(['import', '--hf', path.join(tmp, 'nothing'), '--out', path.join(tmp, 'z')])), /^error: .*nothing.*config\.json/);
    assert.equal(fs.existsSync(path.join(tmp, 'x')) || fs.existsSync(path.join(tmp, 'y')) || fs.existsSync(path.join(tmp, 'z')), false);
  });
});
