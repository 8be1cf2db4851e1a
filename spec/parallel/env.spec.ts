import { strict as assert } from 'assert';
import { ParallelError } from '../../core/errors';
import { discoverEnv, expandNodelist, firstHost } from '../../parallel/env';

describe('parallel env discovery', () => {
  it('defaults to a world of one', () => {
    assert.deepEqual(discoverEnv({}), { rank: 0, worldSize: 1, masterAddr: '127.0.0.1', masterPort: 29500, localRank: 0, secret: undefined, source: 'single' });
  });

  it('reads torchrun-style RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT / LOCAL_RANK', () => {
    const e = discoverEnv({ RANK: '3', WORLD_SIZE: '8', MASTER_ADDR: '10.0.0.5', MASTER_PORT: '1234', LOCAL_RANK: '1', MOECAT_SECRET: 's' });
    assert.deepEqual(e, { rank: 3, worldSize: 8, masterAddr: '10.0.0.5', masterPort: 1234, localRank: 1, secret: 's', source: 'torchrun' });
  });

  it('reads Slurm variables, taking the master from the first host of the nodelist', () => {
    const e = discoverEnv({ SLURM_PROCID: '5', SLURM_NTASKS: '8', SLURM_LOCALID: '1', SLURM_JOB_NODELIST: 'gpu[07-09,12],cpu1' });
    assert.deepEqual([e.rank, e.worldSize, e.localRank, e.masterAddr, e.masterPort, e.source], [5, 8, 1, 'gpu07', 29500, 'slurm']);
  });

  it('prefers torchrun variables over Slurm ones (srun + torchrun-style launchers)', () => {
    assert.equal(discoverEnv({ RANK: '1', WORLD_SIZE: '2', SLURM_PROCID: '0', SLURM_NTASKS: '4', SLURM_JOB_NODELIST: 'n1' }).source, 'torchrun');
  });

  it('reads a Kubernetes indexed Job (JOB_COMPLETION_INDEX + WORLD_SIZE + MASTER_ADDR)', () => {
    const e = discoverEnv({ JOB_COMPLETION_INDEX: '2', WORLD_SIZE: '4', MASTER_ADDR: 'train-0.train', MASTER_PORT: '29400' });
    assert.deepEqual([e.rank, e.worldSize, e.masterAddr, e.masterPort, e.source], [2, 4, 'train-0.train', 29400, 'kubernetes']);
    assert.throws(() => discoverEnv({ JOB_COMPLETION_INDEX: '2', WORLD_SIZE: '4' }), /MASTER_ADDR/);
  });

  it('lets explicit options override the environment', () => {
    const e = discoverEnv({ RANK: '3', WORLD_SIZE: '8' }, { rank: 1, worldSize: 2, masterPort: 4000 });
    assert.deepEqual([e.rank, e.worldSize, e.masterPort, e.source], [1, 2, 4000, 'options']);
  });

  it('refuses bad values naming the variable', () => {
    assert.throws(() => discoverEnv({ RANK: 'x', WORLD_SIZE: '2' }), (e: Error) => e instanceof ParallelError && /env RANK/.test(e.message));
    assert.throws(() => discoverEnv({ RANK: '2', WORLD_SIZE: '2' }), /rank 2 is out of range for world size 2/);
    assert.throws(() => discoverEnv({ RANK: '0' }), /WORLD_SIZE/);
    assert.throws(() => discoverEnv({ RANK: '0', WORLD_SIZE: '1', MASTER_PORT: '70000' }), /MASTER_PORT/);
  });

  it('expands Slurm hostlists with ranges, padding, suffixes and products', () => {
    assert.deepEqual(expandNodelist('node[01-04,07]'), ['node01', 'node02', 'node03', 'node04', 'node07']);
    assert.deepEqual(expandNodelist('a[1-2]-ib,b'), ['a1-ib', 'a2-ib', 'b']);
    assert.deepEqual(expandNodelist('r[1-2]n[8-9]'), ['r1n8', 'r1n9', 'r2n8', 'r2n9']);
    assert.equal(firstHost('node[098-101]'), 'node098');
    assert.throws(() => expandNodelist('node[1-'), /unbalanced brackets/);
    assert.throws(() => expandNodelist('node[a-b]'), /bad range/);
  });
});
