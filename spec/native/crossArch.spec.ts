/**
 * The GEMM's bits across machines (issue 22): native/check/gemm_hash.c hashes the outputs of
 * fixed products under every variant and 1 and 2 threads, and the exp/log/tanh of
 * native/detmath.h over a million inputs. Built with this machine's C compiler, every line must
 * equal its committed hash; where aarch64-linux-gnu-gcc and qemu-aarch64 are
 * installed (Debian: gcc-aarch64-linux-gnu, qemu-user), the arm64 build (portable fmaf kernel)
 * must print it too. Skips, naming what is missing, when no compiler is found.
 */
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

/** Recorded on x86-64 (scalar, AVX2, AVX-512; 1 and 2 threads) and on arm64 under qemu: all equal. */
const GOLDEN = 'a4db3a831e1a0df5';
const DETMATH = '4393db98dd470d7d';

const root = path.resolve(__dirname, '..', '..', '..');
const has = (cmd: string) => spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0;
const SOURCES = ['native/check/gemm_hash.c', 'native/gemm.c', 'native/gemm_x86.c', 'native/pool.c'].map((f) => path.join(root, f));
const FLAGS = ['-O3', '-std=c11', '-fno-trapping-math', '-fno-math-errno', '-ffp-contract=off', `-I${path.join(root, 'native')}`];

function build(cc: string, out: string): void {
  const r = spawnSync(cc, [...FLAGS, ...SOURCES, '-o', out, '-lm', '-lpthread'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
}

function hashes(stdout: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const x = /^(\S+) threads=(\d+) hash=([0-9a-f]{16})$/.exec(line.trim());
    if (x) m.set(`${x[1]}/${x[2]}`, x[3]);
    const d = /^detmath hash=([0-9a-f]{16})$/.exec(line.trim());
    if (d) m.set('detmath', d[1]);
  }
  return m;
}

describe('moecat GEMM bits across machines (committed hash)', function () {
  this.timeout(300000);
  let dir = '';
  before(function () {
    if (!has('cc')) this.skip();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-gemm-hash-'));
  });
  after(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it(`native build: every variant this CPU runs, 1 and 2 threads, prints ${GOLDEN}; exp/log/tanh ${DETMATH}`, () => {
    const exe = path.join(dir, 'gemm_hash');
    build('cc', exe);
    const r = spawnSync(exe, { encoding: 'utf8', timeout: 240000 });
    assert.equal(r.status, 0, r.stderr);
    const h = hashes(r.stdout);
    assert.ok(h.has('scalar/1') && h.has('scalar/2'), r.stdout);
    assert.equal(h.get('detmath'), DETMATH, 'exp/log/tanh');
    h.delete('detmath');
    for (const [k, v] of h) assert.equal(v, GOLDEN, `${k}: ${v}`);
  });

  const cross = has('aarch64-linux-gnu-gcc') && has('qemu-aarch64');
  it(`arm64 build under qemu prints ${GOLDEN} and ${DETMATH}${cross ? '' : ' [skipped: needs aarch64-linux-gnu-gcc and qemu-aarch64]'}`, function () {
    if (!cross) this.skip();
    const exe = path.join(dir, 'gemm_hash_arm64');
    build('aarch64-linux-gnu-gcc', exe);
    const r = spawnSync('qemu-aarch64', ['-L', '/usr/aarch64-linux-gnu', exe], { encoding: 'utf8', timeout: 240000 });
    assert.equal(r.status, 0, r.stderr);
    const h = hashes(r.stdout);
    assert.deepEqual([...h.keys()], ['scalar/1', 'scalar/2', 'detmath']);
    assert.equal(h.get('detmath'), DETMATH, 'arm64 exp/log/tanh');
    h.delete('detmath');
    for (const [k, v] of h) assert.equal(v, GOLDEN, `arm64 ${k}: ${v}`);
  });
});
