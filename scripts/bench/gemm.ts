/**
 * moecat's GEMM (issue 22). Prints JSON lines:
 *   gemm-sgemm    single-threaded sgemm GFLOP/s per variant (scalar, AVX2, AVX-512) and
 *                 OpenBLAS' at 1024³ and at configs/small.yaml's shapes (scripts/bench/gemm.c)
 *   gemm-scaling  the same products on 1 and 2 threads, and whether their bits are identical
 *   native-h2h*   training configs/small.yaml: moecat cpu-native on 1 thread and on all cores
 *                 against PyTorch on 1 and 2 threads, interleaved rounds (scripts/bench/native.ts h2h)
 * The C benchmark is compiled here with `cc` (or gcc/clang); OpenBLAS is linked only into it,
 * and only when its cblas.h and library are installed (Debian: libopenblas-dev). moecat itself
 * never links a BLAS.
 *
 *   node dist/scripts/bench/gemm.js            # everything
 *   node dist/scripts/bench/gemm.js sgemm      # the C benchmark only
 *   node dist/scripts/bench/gemm.js --quick    # fewer rounds
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.resolve(__dirname, '..', '..', '..');
const emit = (row: Record<string, unknown>) => process.stdout.write(JSON.stringify(row) + '\n');

function compiler(): string | null {
  for (const cc of ['cc', 'gcc', 'clang']) if (spawnSync(cc, ['--version'], { stdio: 'ignore' }).status === 0) return cc;
  return null;
}

function openblasFlags(): string[] {
  const inc = ['/usr/include/x86_64-linux-gnu', '/usr/include/aarch64-linux-gnu', '/usr/include/openblas', '/usr/include'].find((d) => {
    try {
      return fs.readFileSync(path.join(d, 'cblas.h'), 'utf8').includes('openblas_set_num_threads');
    } catch {
      return false;
    }
  });
  return inc ? ['-DWITH_OPENBLAS', `-I${inc}`, '-lopenblas'] : [];
}

function sgemm(rounds: number): void {
  const cc = compiler();
  if (!cc) {
    emit({ bench: 'gemm-errors', reason: 'no C compiler (cc, gcc or clang)' });
    return;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-gemm-bench-'));
  try {
    const exe = path.join(dir, 'gemm-bench');
    const n = path.join(root, 'native');
    const ob = openblasFlags();
    // The addon's flags (native/binding.gyp): no -march, no FMA contraction.
    const args = ['-O3', '-std=c11', '-fno-trapping-math', '-fno-math-errno', '-ffp-contract=off', `-I${n}`, path.join(root, 'scripts', 'bench', 'gemm.c'), ...['gemm.c', 'gemm_x86.c', 'pool.c'].map((f) => path.join(n, f)), '-o', exe, ...ob, '-lm', '-lpthread'];
    const c = spawnSync(cc, args, { encoding: 'utf8' });
    if (c.status !== 0) {
      emit({ bench: 'gemm-errors', reason: `compile failed: ${(c.stderr || '').split('\n')[0]}` });
      return;
    }
    if (!ob.length) emit({ bench: 'gemm-errors', reason: 'OpenBLAS not installed: no comparison column (Debian: apt-get install libopenblas-dev)' });
    // Debian's OpenBLAS 0.3.21 picks Haswell kernels on some AVX-512 CPUs; SkylakeX is its fastest there.
    const env = { ...process.env, ...(fs.readFileSync('/proc/cpuinfo', 'utf8').includes('avx512f') && !process.env.OPENBLAS_CORETYPE ? { OPENBLAS_CORETYPE: 'SkylakeX' } : {}) };
    const r = spawnSync(exe, [String(rounds)], { encoding: 'utf8', env, stdio: ['ignore', 'pipe', 'inherit'] });
    process.stdout.write(r.stdout ?? '');
    if (r.status !== 0) emit({ bench: 'gemm-errors', reason: `benchmark exited ${r.status}` });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function main(): void {
  const args = process.argv.slice(2);
  const quick = args.includes('--quick');
  const only = args.filter((a) => !a.startsWith('--'));
  const want = (k: string) => only.length === 0 || only.includes(k);
  if (want('sgemm')) sgemm(quick ? 2 : 5);
  if (want('train')) {
    const r = spawnSync(process.execPath, [path.join(__dirname, 'native.js'), 'h2h', ...(quick ? ['--quick'] : [])], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 << 20 });
    process.stdout.write(r.stdout ?? '');
    if (r.status !== 0) emit({ bench: 'gemm-errors', reason: `native.js h2h exited ${r.status}` });
  }
}

main();
