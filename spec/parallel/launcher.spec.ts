import { strict as assert } from 'assert';
import * as path from 'path';
import { Writable } from 'stream';
import { launchLocal } from '../../parallel/launcher';

const CHILD = path.join(__dirname, '..', 'fixtures', 'parallel-launch-child.js');

function sink(): { stream: Writable; lines: () => string[] } {
  let text = '';
  const stream = new Writable({ write: (c, _e, cb) => ((text += c.toString()), cb()) });
  return { stream, lines: () => text.split('\n').filter(Boolean) };
}

describe('parallel launcher', function () {
  this.timeout(60_000);

  it('starts N ranks with torchrun-style env and a secret, prefixing their output', async () => {
    const out = sink();
    const code = await launchLocal({ nproc: 3, argv: [CHILD], env: { PATH: process.env.PATH }, stdout: out.stream, stderr: out.stream });
    assert.equal(code, 0);
    const lines = out.lines().sort();
    assert.equal(lines.length, 3);
    lines.forEach((l, r) => assert.match(l, new RegExp(`^\\[rank ${r}\\] hello from ${r}/3 attempt 0 port \\d+ secret set$`)));
  });

  it('kills the other ranks when one fails and restarts the whole group', async () => {
    const out = sink();
    const restarts: string[] = [];
    const t0 = Date.now();
    const code = await launchLocal({
      nproc: 3, argv: [CHILD], env: { FAIL_RANK: '1', FAIL_UNTIL: '2' }, maxRestarts: 3, stdout: out.stream, stderr: out.stream,
      onRestart: (n, why) => restarts.push(`${n}: ${why}`),
    });
    assert.equal(code, 0);
    assert.deepEqual(restarts, ['1: rank 1 exited with status 7', '2: rank 1 exited with status 7']);
    assert.ok(Date.now() - t0 < 30_000, 'survivors were killed, not waited for');
    assert.equal(out.lines().filter((l) => /attempt 2/.test(l)).length, 3);
    assert.ok(out.lines().includes('[rank 1] failing on purpose'));
  });

  it('returns the failing status once restarts run out', async () => {
    const out = sink();
    const code = await launchLocal({ nproc: 2, argv: [CHILD], env: { FAIL_RANK: '0', FAIL_UNTIL: '9' }, maxRestarts: 1, stdout: out.stream, stderr: out.stream });
    assert.equal(code, 7);
  });
});
