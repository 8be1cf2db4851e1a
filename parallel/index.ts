/** parallel/: ws transport, rendezvous, deterministic collectives, env discovery, launcher. */
export { Group } from './collectives';
export { GroupOptions } from './rendezvous';
export { canonicalTreeSum, blockNodes, shardRange, ReduceOp } from './tree';
export { discoverEnv, expandNodelist, firstHost, ParallelEnv, EnvVars, DEFAULT_MASTER_PORT } from './env';
export { launchLocal, LaunchOptions, freePort } from './launcher';
export { NumArray, DEFAULT_MAX_FRAME_BYTES } from './frames';
