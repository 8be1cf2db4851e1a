/**
 * Architecture config validation (DESIGN.md section 10): a bad field is refused before any work
 * with a ConfigError whose message names the key path.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import YAML from 'yaml';
import { parseModelConfig, targetFfnPerToken } from '../../model/config';
import { ConfigError } from '../../core/errors';

const good = () => ({
  vocabSize: 512,
  dModel: 64,
  nLayers: 2,
  attention: { type: 'mla', nHeads: 4, qLoraRank: 32, kvLoraRank: 32, nopeHeadDim: 16, ropeHeadDim: 8, vHeadDim: 16 } as Record<string, unknown>,
  ffnHidden: 128,
  moe: { nExperts: 8, nZeroExperts: 4, topK: 3, expertHidden: 64, expertGroups: 2 } as Record<string, unknown>,
  maxSeqLen: 128,
} as Record<string, unknown>);

type Raw = ReturnType<typeof good>;
const moe = (r: Raw) => r.moe as Record<string, unknown>;

const bad: [string, (r: Raw) => void, string][] = [
  ['topK greater than the number of experts', (r) => (moe(r).topK = 13), 'model.moe.topK'],
  ['nExperts not divisible by expertGroups', (r) => (moe(r).expertGroups = 3), 'model.moe.expertGroups'],
  ['an unknown key', (r) => (moe(r).numExperts = 8), 'model.moe'],
  ['an unknown top-level key', (r) => (r.dmodel = 64), 'model'],
  ['a negative dModel', (r) => (r.dModel = -64), 'model.dModel'],
  ['a fractional nLayers', (r) => (r.nLayers = 1.5), 'model.nLayers'],
  ['K_e above topK', (r) => (moe(r).targetFfnPerToken = 4), 'model.moe.targetFfnPerToken'],
  ['an odd RoPE head dim', (r) => ((r.attention as Record<string, unknown>).ropeHeadDim = 7), 'model.attention.ropeHeadDim'],
  ['GQA heads not a multiple of KV heads', (r) => (r.attention = { type: 'gqa', nHeads: 6, nKvHeads: 4, headDim: 8 }), 'model.attention.nKvHeads'],
  ['a missing required field', (r) => delete r.ffnHidden, 'model.ffnHidden'],
  ['a wrong type', (r) => (r.vocabSize = '512'), 'model.vocabSize'],
];

describe('model/config validation', () => {
  it('accepts configs/tiny.yaml and configs/small.yaml and fills defaults', () => {
    for (const f of ['configs/tiny.yaml', 'configs/small.yaml']) {
      const c = parseModelConfig(YAML.parse(fs.readFileSync(f, 'utf8')).model);
      assert.equal(c.rmsEps, 1e-5);
      assert.ok(targetFfnPerToken(c) <= c.moe.topK);
    }
    const c = parseModelConfig(good());
    assert.equal(c.layerType, 'scmoe');
    assert.equal(c.moe.routedScalingFactor, 1);
    assert.equal(targetFfnPerToken(c), 3, 'K_e defaults to topK');
  });

  for (const [what, mutate, key] of bad) {
    it(`refuses ${what} with a ConfigError naming ${key}`, () => {
      const raw = good();
      mutate(raw);
      assert.throws(
        () => parseModelConfig(raw),
        (e: unknown) => {
          assert.ok(e instanceof ConfigError, `not a ConfigError: ${String(e)}`);
          assert.equal(e.code, 'E_CONFIG');
          // The key path appears as a whole path, followed by ':' (not as a prefix of a longer one).
          assert.ok(new RegExp(`(^|[ ;])${key.replace(/\./g, '\\.')}: `).test(e.message), `message does not name ${key}: ${e.message}`);
          return true;
        },
      );
    });
  }

  it('an unknown key is named in the message', () => {
    const raw = good();
    moe(raw).numExperts = 8;
    assert.throws(() => parseModelConfig(raw), /numExperts/);
  });
});
