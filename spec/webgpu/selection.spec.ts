/**
 * Choosing the webgpu backend (issue 21 item 1): an install without the optional packages still
 * works and a forced webgpu says what is missing; auto-selection never takes a software adapter;
 * a forced webgpu names the adapter and its limits on the start-up line.
 */
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { BACKENDS } from '../../core/backend';
import { hasGpuDeviceNode, probeAdapter } from '../../core/webgpu';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const PROBE = path.join(ROOT, 'dist', 'scripts', 'device', 'probe.js');
const CLI = path.join(ROOT, 'dist', 'cli', 'main.js');
const HIDE = path.join(ROOT, 'spec', 'webgpu', 'hide-packages.js');

function node(args: string[], env: NodeJS.ProcessEnv = process.env) {
  const r = spawnSync(process.execPath, args, { cwd: ROOT, env, encoding: 'utf8', timeout: 120000 });
  return { status: r.status, out: r.stdout, err: r.stderr };
}

describe('webgpu: backend selection', function () {
  this.timeout(120000);

  it('orders the backends tensorflow-gpu > webgpu > tensorflow > cpu-native > wasm > cpu', () => {
    assert.deepEqual([...BACKENDS], ['tensorflow-gpu', 'webgpu', 'tensorflow', 'cpu-native', 'wasm', 'cpu']);
  });

  it('without the optional packages, auto still picks a backend and a forced webgpu is one clear error', () => {
    const auto = node(['-r', HIDE, PROBE, 'auto']);
    assert.equal(auto.status, 0, auto.err);
    assert.match(auto.out, /^backend: (cpu-native|wasm|cpu)/);
    assert.match(auto.out, /webgpu unavailable \(the optional package 'webgpu'/);
    const forced = node(['-r', HIDE, CLI, 'train', '--config', 'configs/tiny.yaml', '--backend', 'webgpu', '--set', 'data.synthetic={}']);
    assert.equal(forced.status, 2, forced.err);
    const lines = forced.err.trim().split('\n').filter((l) => !/artificially reduced/.test(l));
    assert.equal(lines.length, 1, forced.err);
    assert.match(lines[0], /^error: --backend: backend 'webgpu' could not be loaded: the optional package 'webgpu' \(Dawn\) is not installed.*\(install the optional packages webgpu and @tensorflow\/tfjs-backend-webgpu/);
  });

  describe('with an adapter', () => {
    let software = false;
    before(async function () {
      try {
        software = (await probeAdapter()).summary.software;
      } catch (e) {
        console.log(`    (skipped: ${(e as Error).message.split('\n')[0]})`);
        this.skip();
      }
    });

    it('auto takes webgpu only for a hardware adapter', () => {
      const auto = node([PROBE, 'auto']);
      assert.equal(auto.status, 0, auto.err);
      if (software) {
        assert.doesNotMatch(auto.out, /^backend: webgpu/);
        if (hasGpuDeviceNode()) {
          assert.match(auto.out, /webgpu unavailable \(only a software adapter/);
        } else {
          // No GPU device node: Dawn is not asked at all, so its driver warnings stay off stderr.
          assert.match(auto.out, /webgpu unavailable \(no GPU device node/);
          assert.doesNotMatch(auto.err, /Warning: /);
        }
      } else {
        assert.match(auto.out, /^backend: webgpu on /);
      }
    });

    it('a forced webgpu (flag, or MOECAT_BACKEND for the CLI) names the adapter: vendor, architecture, driver and limits', () => {
      const want = /^backend: webgpu on .+ \(vendor \S+, architecture \S+, (software|hardware); limits: storage binding \d+ MiB, buffer \d+ MiB, workgroup storage \d+ B, \d+ invocations\)$/;
      const flag = node([PROBE, 'webgpu']);
      assert.equal(flag.status, 0, flag.err);
      assert.match(flag.out.trim(), want);
      const out = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-sel-'));
      try {
        const sets = ['data.synthetic={}', 'train.steps=1', 'train.checkpointEvery=0', 'optim.schedule={type: wsd, warmupSteps: 0, decaySteps: 1}'].flatMap((x) => ['--set', x]);
        const cli = node([CLI, 'train', '--config', 'configs/tiny.yaml', '--out', out, ...sets], { ...process.env, MOECAT_BACKEND: 'webgpu' });
        assert.equal(cli.status, 0, cli.err);
        assert.match(cli.err.split('\n').find((l) => l.startsWith('backend: ')) ?? '', want);
      } finally {
        fs.rmSync(out, { recursive: true, force: true });
      }
    });
  });
});
