/*
 * A persistent worker pool (native/pool.c). A job is `ntasks` independent tasks; the calling
 * thread and up to threads-1 workers take task indices from one counter until none is left.
 * Tasks must write disjoint outputs and never depend on which thread runs them: then the bits
 * of a job are the same for every thread count (moecat's kernels split output tiles or element
 * ranges, never a sum).
 */
#ifndef MOECAT_POOL_H
#define MOECAT_POOL_H
#include <stdint.h>

/* task(ctx, index, slot): slot in [0, threads) names the thread (for per-thread scratch). */
typedef void (*pool_task_fn)(void* ctx, int64_t index, int slot);

/* Logical cores of this machine (at least 1). */
int pool_cores(void);
/* Sets the default thread count (n < 1: all cores; capped at POOL_MAX_THREADS). */
void pool_set_threads(int n);
/* The default thread count. */
int pool_threads(void);
/*
 * Runs tasks 0..ntasks-1 on at most `threads` threads (threads < 1: the default) and returns
 * when all are done. When another job is running (a second JS thread), runs inline on the
 * calling thread: same bits, no waiting on each other.
 */
void pool_run(int64_t ntasks, pool_task_fn fn, void* ctx, int threads);

/*
 * Profiling switch: returns (in *ns, *jobs) the calling threads' CPU time inside top-level jobs
 * not forced onto one thread (meant for a run at one thread), and their count, since profiling was last
 * turned on; on = 1 resets and starts counting, 0 stops. Off by default (it reads the thread
 * clock twice per job).
 */
void pool_profile(int on, int64_t* ns, int64_t* jobs);

#define POOL_MAX_THREADS 256

#endif
