/**
 * The expert-sharded layout in process (trainer/expertShard.ts, LocalGroup): each rank holds the
 * replicated parameters and only its own experts; the gradient norm and per-group RMS continued
 * across ranks are the bits of the single loop over the global vector; rank 0's gather rebuilds
 * the global vector; a state vector of the wrong size is refused with one line.
 */
import { strict as assert } from 'assert';
import { loadTrainConfig } from '../../trainer/config';
import { flatLayout } from '../../model/flatParams';
import { numel, paramSpecs } from '../../model/params';
import { expertChainedGradNorm, expertChainedGradRms, expertShardOf, gatherToRoot, hashToAll, heldFromGlobal, reduceExpertSharded } from '../../trainer/expertShard';
import { canonicalTreeSum } from '../../parallel/tree';
import { addSquares, gradRmsByGroup } from '../../trainer/stability';
import { TrainingError } from '../../core/errors';
import { LocalGroup } from '../helpers/localGroup';

const model = loadTrainConfig('configs/tiny.yaml', ['data.synthetic={}']).config.model;
const global = flatLayout(paramSpecs(model));
const slices = global.specs.map((s) => ({ offset: global.offsets.get(s.name)!, size: numel(s.shape), group: s.group }));

/** A global vector with values of every magnitude (so the float64 sums depend on their order). */
function globalVector(seed: number): Float32Array {
  const g = new Float32Array(global.total);
  let x = seed;
  for (let i = 0; i < g.length; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    g[i] = ((x / 2147483648) - 0.5) * 10 ** ((x % 7) - 3);
  }
  return g;
}

describe('expert-sharded layout (expert parallelism)', () => {
  for (const W of [2, 4]) {
    it(`W = ${W}: each rank holds the replicated parameters and exactly its own experts`, () => {
      const N = model.moe.nExperts;
      const expertElems = global.specs.filter((s) => s.expert).reduce((n, s) => n + numel(s.shape), 0);
      const rep = global.total - expertElems;
      const seen = new Set<string>();
      let visited = 0;
      for (let r = 0; r < W; r++) {
        const sh = expertShardOf(global, N, { rank: r, worldSize: W });
        assert.equal(sh.replicated, rep);
        assert.equal(sh.held.total, rep + expertElems / W);
        for (const s of sh.held.specs) {
          if (!s.expert) continue;
          assert.equal(Math.floor(s.expert.index / (N / W)), r, `${s.name} on rank ${r}`);
          seen.add(s.name);
        }
        // Chain passes: one per MoE layer; the rank visits all its own experts' elements.
        assert.equal(sh.passes.length, model.nLayers);
        const mine = sh.passes.flatMap((p) => p[r]);
        assert.equal(mine.filter((s) => s.offset >= rep).reduce((n, s) => n + s.size, 0), expertElems / W);
        visited += mine.reduce((n, s) => n + s.size, 0);
      }
      assert.equal(seen.size, global.specs.filter((s) => s.expert).length, 'some expert is held by no rank');
      assert.equal(visited, global.total, 'the ranks\' passes do not visit the global vector once');
    });

    it(`W = ${W}: chained norm and group RMS are the single loop's bits; rank 0 gathers the global vector`, async () => {
      const g = globalVector(W);
      const group = new LocalGroup(W);
      const ranks = Array.from({ length: W }, (_, r) => ({ dp: group.member(r), sh: expertShardOf(global, model.moe.nExperts, { rank: r, worldSize: W }) }));
      const held = ranks.map(({ sh }) => heldFromGlobal(sh, global, g));
      const norms = await Promise.all(ranks.map(({ dp, sh }, r) => expertChainedGradNorm(dp, sh, held[r])));
      const want = Math.sqrt(addSquares(0, g));
      for (const n of norms) assert.ok(Object.is(n, want), `norm ${n} != ${want}`);
      const rms = await Promise.all(ranks.map(({ dp, sh }, r) => expertChainedGradRms(dp, sh, held[r], slices, 0.5)));
      const wantRms = gradRmsByGroup(g, slices, 0.5);
      for (const x of rms) assert.deepEqual(x, wantRms);
      const gathered = await Promise.all(ranks.map(({ dp, sh }, r) => gatherToRoot(dp, sh, global, held[r])));
      assert.ok(gathered[0] && Buffer.from(gathered[0].buffer).equals(Buffer.from(g.buffer)), 'rank 0 does not rebuild the global vector');
      assert.ok(gathered.slice(1).every((x) => x === null), 'only rank 0 receives the experts');
      const hex = 'a1'.repeat(31) + '0f';
      assert.deepEqual(await Promise.all(ranks.map(({ dp }, r) => hashToAll(dp, r === 0 ? hex : null))), new Array(W).fill(hex));
    });
  }

  it('the step gradient: the replicated prefix in the canonical tree over ranks, the own experts + 0 (-0 becomes +0)', async () => {
    const W = 2;
    const group = new LocalGroup(W);
    const ranks = Array.from({ length: W }, (_, r) => ({ dp: group.member(r), sh: expertShardOf(global, model.moe.nExperts, { rank: r, worldSize: W }) }));
    const locals = ranks.map(({ sh }, r) => heldFromGlobal(sh, global, globalVector(10 + r)));
    for (const l of locals) l[l.length - 1] = -0;
    const want = canonicalTreeSum(locals.map((l, r) => l.slice(0, ranks[r].sh.replicated)));
    const experts = locals.map((l, r) => Float32Array.from(l.subarray(ranks[r].sh.replicated)));
    const got = await Promise.all(ranks.map(({ dp, sh }, r) => reduceExpertSharded(dp, sh, locals[r], r, 1, W)));
    got.forEach((g, r) => {
      const R = ranks[r].sh.replicated;
      assert.ok(Buffer.from(g.slice(0, R).buffer).equals(Buffer.from(want.buffer)), `rank ${r}: replicated prefix is not the tree sum`);
      assert.deepEqual(Array.from(g.subarray(R, g.length - 1)), Array.from(experts[r].subarray(0, experts[r].length - 1)));
      assert.ok(Object.is(g[g.length - 1], 0), `rank ${r}: -0 + 0 should be +0`);
    });
  });

  it('a state vector that is neither the whole model nor this rank\'s part is refused with one line', () => {
    const sh = expertShardOf(global, model.moe.nExperts, { rank: 1, worldSize: 2 });
    assert.throws(() => heldFromGlobal(sh, global, new Float32Array(global.total - 1)), (e: unknown) => e instanceof TrainingError && /expected \d+ \(all experts\) or \d+ \(rank 1's experts\)/.test(e.message) && !e.message.includes('\n'));
    assert.throws(() => expertShardOf(global, model.moe.nExperts, { rank: 0, worldSize: 3 }), (e: unknown) => e instanceof TrainingError && /divisible by the world size \(3\)/.test(e.message));
  });
});
