/** What a new user meets in the first hour: parser errors, flags' help, start-up line, --set. */
import { strict as assert } from 'assert';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { describeBackend } from '../../core/backend';

function moecat(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const main = path.join(__dirname, '..', '..', 'cli', 'main.js');
  const r = spawnSync(process.execPath, [main, ...args], { encoding: 'utf8', env: { ...process.env, MOECAT_BACKEND: 'cpu' }, timeout: 60000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Exit 2, nothing on stdout, exactly one line on stderr (no help dump). */
function oneLine(args: string[]): string {
  const r = moecat(args);
  assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
  assert.equal(r.stdout, '', 'no help on stdout');
  const lines = r.stderr.split('\n').filter((l) => l && !l.startsWith('backend:'));
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /^error: /);
  return lines[0];
}

describe('first hour: CLI errors and help', function () {
  this.timeout(120000);

  it('parser errors are one line and exit 2: no command, a misspelt command, a missing flag, an unknown flag', () => {
    assert.equal(oneLine([]), 'error: moecat: give a command (see moecat --help)');
    assert.equal(oneLine(['trian']), "error: moecat: unknown command 'trian' (did you mean train? see moecat --help)");
    assert.match(oneLine(['generate', '--checkpoint', 'x']), /^error: moecat generate: Missing required argument: prompt \(see moecat generate --help\)$/);
    assert.match(oneLine(['train', '--bogus', '1']), /^error: moecat train: Unknown argument: bogus/);
  });

  it('serve --port 99999 names the valid range', () => {
    assert.equal(oneLine(['serve', '--checkpoint', 'x', '--port', '99999']), 'error: --port: --port must be an integer from 0 to 65535, got 99999 (0 picks any free port)');
  });

  it('--set blames the flag and suggests the nearest key; a bad value via --set is blamed on the flag too', () => {
    assert.equal(oneLine(['train', '--config', 'configs/tiny.yaml', '--set', 'model.dmodel=32']), "error: --set model.dmodel: unknown key 'dmodel' in model (did you mean dModel?)");
    assert.match(oneLine(['train', '--config', 'configs/tiny.yaml', '--set', 'optim.lr=-1']), /^error: --set optim\.lr: optim\.lr: Number must be greater than 0$/);
  });

  it('help lists cpu-native under --backend, and the top level has examples pointing at the demo and configs', () => {
    const t = moecat(['train', '--help']);
    assert.equal(t.status, 0);
    assert.match(t.stdout.replace(/\s+/g, ' '), /--backend compute backend: auto \(fastest that loads\), [a-z-, ]*cpu-native/);
    const h = moecat(['--help']);
    assert.equal(h.status, 0);
    assert.match(h.stdout, /Examples:/);
    assert.match(h.stdout, /configs\/tiny\.yaml/);
    assert.match(h.stdout, /npm run demo/);
    assert.match(h.stdout, /moecat verify/);
  });

  it('the start-up backend line keeps each reason whole', () => {
    const reason = 'addon not built: /some/long/path/to/native/build/Release/moecat_native.node does not exist (run npm run build:native with libopenblas-dev installed)';
    const line = describeBackend({ name: 'wasm', tfBackend: 'wasm', skipped: [{ name: 'cpu-native', reason }] });
    assert.ok(line.includes(reason), line);
  });
});
