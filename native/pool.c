/*
 * Persistent worker pool (see pool.h). Workers are created on first use, sleep on a condition
 * variable between jobs after a short spin (a training step issues thousands of products in a
 * row, and waking a sleeping thread costs tens of microseconds), and live until the process
 * exits. Which task runs on which thread varies from run to run; the results do not, because
 * tasks write disjoint outputs with a fixed order of operations inside each.
 */
#define _GNU_SOURCE
#include "pool.h"
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv_start = PTHREAD_COND_INITIALIZER;
static pthread_cond_t cv_done = PTHREAD_COND_INITIALIZER;
/* Serialises jobs: a caller that finds it taken runs its job inline. */
static pthread_mutex_t job_lock = PTHREAD_MUTEX_INITIALIZER;

static int n_workers = 0;     /* workers started */
static int default_threads = 0; /* 0: not set yet (all cores) */

/* The current job. */
static pool_task_fn job_fn;
static void* job_ctx;
static int64_t job_ntasks;
static int job_workers;          /* workers that take part (slots 1..job_workers) */
static atomic_llong job_next;    /* next task index */
static atomic_long generation;   /* bumped per job; workers wait for a change */
static int pending;              /* workers of this job not yet finished (under mu) */

/* Spin iterations a worker waits for the next job before it sleeps (tens of microseconds). */
#define SPIN 2000

int pool_cores(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : (n > POOL_MAX_THREADS ? POOL_MAX_THREADS : (int)n);
}

void pool_set_threads(int n) {
  default_threads = n < 1 ? pool_cores() : (n > POOL_MAX_THREADS ? POOL_MAX_THREADS : n);
}

int pool_threads(void) {
  if (default_threads == 0) default_threads = pool_cores();
  return default_threads;
}

static void run_tasks(int slot) {
  for (;;) {
    const int64_t t = atomic_fetch_add_explicit(&job_next, 1, memory_order_relaxed);
    if (t >= job_ntasks) break;
    job_fn(job_ctx, t, slot);
  }
}

/* The generation each worker was started at (read by the worker, set before it starts). */
static long start_gen[POOL_MAX_THREADS];

static void* worker(void* arg) {
  const int slot = (int)(intptr_t)arg;
  long seen = start_gen[slot]; /* not `generation` now: the job it was started for may have begun */
  for (;;) {
    long g;
    int spins = 0;
    while ((g = atomic_load_explicit(&generation, memory_order_acquire)) == seen && spins < SPIN) {
      CPU_RELAX();
      spins++;
    }
    if (g == seen) {
      pthread_mutex_lock(&mu);
      while ((g = atomic_load(&generation)) == seen) pthread_cond_wait(&cv_start, &mu);
      pthread_mutex_unlock(&mu);
    }
    seen = g;
    if (slot > job_workers) continue; /* not part of this job */
    run_tasks(slot);
    pthread_mutex_lock(&mu);
    if (--pending == 0) pthread_cond_signal(&cv_done);
    pthread_mutex_unlock(&mu);
  }
  return NULL;
}

/* Starts workers up to `want` (slots 1..want); returns how many exist. */
static int ensure_workers(int want) {
  while (n_workers < want) {
    pthread_t th;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    start_gen[n_workers + 1] = atomic_load(&generation);
    const int ok = pthread_create(&th, &at, worker, (void*)(intptr_t)(n_workers + 1)) == 0;
    pthread_attr_destroy(&at);
    if (!ok) break;
    n_workers++;
  }
  return n_workers < want ? n_workers : want;
}

/*
 * Profile (pool_profile): CPU time of the calling thread inside top-level jobs that more threads
 * would split (thread count not forced to 1: at one thread a GEMM may be one tile that it cuts
 * into several at two). Measured at one thread, it is
 * the parallel part of a training step; the rest bounds the speed-up from more threads (Amdahl).
 */
static atomic_int profiling;
static atomic_llong prof_ns, prof_jobs;
static _Thread_local int in_job;

static int64_t thread_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void pool_profile(int on, int64_t* ns, int64_t* jobs) {
  *ns = atomic_load(&prof_ns);
  *jobs = atomic_load(&prof_jobs);
  if (on) {
    atomic_store(&prof_ns, 0);
    atomic_store(&prof_jobs, 0);
  }
  atomic_store(&profiling, on);
}

static void run_job(int64_t ntasks, pool_task_fn fn, void* ctx, int threads);

void pool_run(int64_t ntasks, pool_task_fn fn, void* ctx, int threads) {
  if (ntasks <= 0) return;
  if (in_job || !atomic_load_explicit(&profiling, memory_order_relaxed) || threads == 1) {
    run_job(ntasks, fn, ctx, threads);
    return;
  }
  in_job = 1;
  const int64_t t0 = thread_ns();
  run_job(ntasks, fn, ctx, threads);
  atomic_fetch_add(&prof_ns, thread_ns() - t0);
  atomic_fetch_add(&prof_jobs, 1);
  in_job = 0;
}

static void run_job(int64_t ntasks, pool_task_fn fn, void* ctx, int threads) {
  if (threads < 1) threads = pool_threads();
  if (threads > POOL_MAX_THREADS) threads = POOL_MAX_THREADS;
  if (threads > ntasks) threads = (int)ntasks;
  if (threads <= 1 || pthread_mutex_trylock(&job_lock) != 0) {
    for (int64_t t = 0; t < ntasks; t++) fn(ctx, t, 0);
    return;
  }
  const int w = ensure_workers(threads - 1);
  pthread_mutex_lock(&mu);
  job_fn = fn;
  job_ctx = ctx;
  job_ntasks = ntasks;
  job_workers = w;
  pending = w;
  atomic_store(&job_next, 0);
  atomic_fetch_add_explicit(&generation, 1, memory_order_release);
  pthread_cond_broadcast(&cv_start);
  pthread_mutex_unlock(&mu);
  run_tasks(0);
  pthread_mutex_lock(&mu);
  while (pending > 0) pthread_cond_wait(&cv_done, &mu);
  pthread_mutex_unlock(&mu);
  pthread_mutex_unlock(&job_lock);
}
