import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadTrainConfig } from '../../trainer/config';
import { ConfigError } from '../../core/errors';

describe('trainer/config', () => {
  let dir: string;
  before(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-cfg-'))));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('loads configs/tiny.yaml and applies --set overrides with YAML typing', () => {
    const { config } = loadTrainConfig('configs/tiny.yaml', ['optim.lr=0.01', 'model.moe.topK=2']);
    assert.equal(config.optim.lr, 0.01);
    assert.equal(config.model.moe.topK, 2);
    assert.equal(config.optim.eps, 1e-16);
  });

  it('configs/small.yaml validates', () => {
    assert.equal(loadTrainConfig('configs/small.yaml').config.model.dModel, 192);
  });

  const bad: [string, string[], RegExp][] = [
    ['a wrong type', ['optim.lr=fast'], /optim\.lr/],
    ['an unknown key', ['model.moe.nExpert=3'], /model\.moe/],
    ['topK above the expert count', ['model.moe.topK=99'], /model\.moe\.topK/],
    ['seqLen above maxSeqLen', ['data.seqLen=4096'], /data\.seqLen/],
    ['a negative width', ['model.dModel=-4'], /model\.dModel/],
  ];
  for (const [what, sets, re] of bad) {
    it(`refuses ${what}, naming the key`, () => {
      assert.throws(() => loadTrainConfig('configs/tiny.yaml', sets), (e: unknown) => e instanceof ConfigError && re.test(e.message));
    });
  }

  it('refuses invalid YAML and a missing file with the file name', () => {
    const f = path.join(dir, 'bad.yaml');
    fs.writeFileSync(f, 'model: [unclosed\n');
    assert.throws(() => loadTrainConfig(f), (e: unknown) => e instanceof ConfigError && e.message.includes('bad.yaml'));
    assert.throws(() => loadTrainConfig(path.join(dir, 'nope.yaml')), (e: unknown) => e instanceof ConfigError && e.message.includes('nope.yaml'));
  });
});
