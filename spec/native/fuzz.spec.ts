/**
 * Every entry point of the native addon with at least 1,000 random bad argument sets each:
 * wrong types, too few arguments, negative or non-integer sizes, sizes whose products overflow
 * int64, arrays shorter than the shapes and strides address, indices and op codes out of range.
 * Each call must throw a JS error naming the addon, leave every array it was given unchanged
 * (validation comes before any write), and the process must survive. A valid call of each entry
 * point succeeds, so the checks discriminate. Skips, with the reason, when the addon is not built.
 */
import { strict as assert } from 'assert';
import { loadNativeKernels, nativeAddon } from '../../core/native';
import { Rand } from '../helpers/rand';

const probe = loadNativeKernels({ register: false });
const skipReason = probe.reason ?? '';
const SETS_PER_ENTRY = 1000;


type Args = unknown[];
/** Makes an argument list bad, in place (`v` is the valid list it started from). */
type Mutation = (a: Args, r: Rand, v: Args) => void;

const MAX_SAFE = Number.MAX_SAFE_INTEGER;
/** A negative integer, usually small. */
const negative = (r: Rand): number => (r.next() < 0.5 ? -1 - r.int(4) : -1 - r.int(MAX_SAFE));
/** An integer larger than v: a little, past int32, or near 2^53 (products overflow int64). */
const larger = (v: number, r: Rand): number => {
  const c = r.int(3);
  if (c === 0) return v + 1 + r.int(8);
  if (c === 1) return 2 ** 31 + r.int(2 ** 31);
  return MAX_SAFE - r.int(2 ** 20);
};
/** Values that are not safe integers. */
const NOT_INTEGERS: unknown[] = [1.5, -0.25, NaN, Infinity, -Infinity, 2 ** 53, 2 ** 64, '3', undefined, null, {}, [], true];
const NOT_NUMBERS: unknown[] = ['1', undefined, null, {}, [], Symbol('x')];
const NOT_STRINGS: unknown[] = [1, undefined, null, {}, [], Symbol('x'), new Uint8Array(4)];
const NOT_ARRAYS = (n: number): unknown[] => [new Float64Array(n), new Int32Array(n), new Uint8Array(n * 4), new Float32Array(n).buffer, Array.from({ length: n }, () => 0), n, 'x', undefined, null, {}];

/** Argument kinds of an entry point, for the generic mutations. */
type Kind = 'f32' | 'i32' | 'f64' | 'int' | 'dbl' | 'str' | 'f32list';

const f32 = (n: number) => new Float32Array(n).map((_, i) => ((i * 7) % 5) / 4 + 0.5);
const i32 = (xs: number[]) => Int32Array.from(xs);

/** Shorten typed array argument i to a random shorter length. */
const shorter = (i: number): Mutation => (a, r) => {
  const t = a[i] as Float32Array | Int32Array | Float64Array;
  const C = t.constructor as new (n: number) => typeof t;
  const n = r.int(t.length);
  const out = new C(n);
  out.set(t.subarray(0, n));
  a[i] = out;
};
/** Make int argument i negative / larger / outside [lo, hi]. */
const neg = (i: number): Mutation => (a, r) => void (a[i] = negative(r));
const grow = (i: number): Mutation => (a, r, v) => void (a[i] = larger(v[i] as number, r));
const outside = (i: number, lo: number, hi: number): Mutation => (a, r) => void (a[i] = r.next() < 0.5 ? lo - 1 - r.int(1000) : hi + 1 + r.int(1000));
/** Put an out-of-range value into one element of Int32Array argument i (valid range [0, n)). */
const badIndex = (i: number, n: number): Mutation => (a, r) => {
  const t = Int32Array.from(a[i] as Int32Array);
  if (t.length === 0) return void (a[i] = 'not an array');
  t[r.int(t.length)] = r.next() < 0.5 ? -1 - r.int(2 ** 31 - 1) : n + r.int(2 ** 31 - 1 - n);
  a[i] = t;
};
/** Grow one element of Int32Array argument i (strides, shapes) above its valid value. */
const growElement = (i: number): Mutation => (a, r, v) => {
  const t = Int32Array.from(a[i] as Int32Array);
  const k = r.int(t.length);
  t[k] = Math.max(t[k], (v[i] as Int32Array)[k]) + 1 + r.int(r.next() < 0.5 ? 8 : 2 ** 30);
  a[i] = t;
};
const negElement = (i: number): Mutation => (a, r) => {
  const t = Int32Array.from(a[i] as Int32Array);
  t[r.int(t.length)] = -1 - r.int(r.next() < 0.5 ? 8 : 2 ** 31 - 1);
  a[i] = t;
};
/** Give Int32Array argument i a length no call accepts there (rank 0 or above 8; slice lists of another length). */
const resize = (i: number): Mutation => (a, r) => {
  const t = a[i] as Int32Array;
  const n = r.pick([0, 9, 10]);
  a[i] = Int32Array.from({ length: n }, (_, k) => t[k % Math.max(1, t.length)] ?? 1);
};
/** Append valid indices to Int32Array argument i (more rows than the other arrays hold). */
const longer = (i: number): Mutation => (a, r) => {
  const t = a[i] as Int32Array;
  a[i] = Int32Array.from([...t, ...Array.from({ length: 1 + r.int(6) }, () => 0)]);
};

/** Bad weight lists of the experts entry points at argument i (each bad whatever else changed): one array short, fewer than 6 or 7 arrays, one not a Float32Array. */
const expertLists = (i: number): Mutation[] => [
  (a, r) => {
    const l = [...(a[i] as Float32Array[])];
    l[r.int(l.length)] = f32(r.int(6));
    a[i] = l;
  },
  (a, r) => void (a[i] = (a[i] as Float32Array[]).slice(0, r.int(6))),
  (a) => void (a[i] = Array.from({ length: 7 }, () => f32(6))),
  (a, r) => {
    const l = [...(a[i] as unknown[])];
    l[r.int(l.length)] = r.pick([new Float64Array(6), 1, null, 'x']);
    a[i] = l;
  },
];
/** Bad expert offsets at argument i (each bad whatever else changed): not from 0, decreasing, past the rows, or empty. */
const expertOffsets = (i: number): Mutation[] => [
  (a, r) => void (a[i] = i32([1 + r.int(3), 1, 3])),
  (a, r) => void (a[i] = i32([0, 2 + r.int(5), 1])),
  (a, r) => void (a[i] = i32([0, 1, 4 + r.int(2 ** 30)])),
  (a) => void (a[i] = i32([])),
];

interface Entry {
  name: string;
  kinds: Kind[];
  valid: () => Args;
  bad: Mutation[];
  /** False for entry points whose valid call changes process-wide state (not called). */
  callValid?: boolean;
}

/** Generic mutations: a wrong type for any argument, or too few arguments. */
function generic(kinds: Kind[]): Mutation[] {
  return [
    ...kinds.map((k, i): Mutation => (a, r) => {
      if (k === 'int') a[i] = r.pick(NOT_INTEGERS);
      else if (k === 'dbl') a[i] = r.pick(NOT_NUMBERS);
      else if (k === 'str') a[i] = r.pick(NOT_STRINGS);
      else if (k === 'f32list') a[i] = r.pick([...NOT_ARRAYS(3), [new Float64Array(6)], [1, 2, 3]]);
      else a[i] = r.pick(NOT_ARRAYS(((a[i] as ArrayLike<number>).length ?? 1) + 1).filter((v) => !(k === 'f32' ? v instanceof Float32Array : k === 'i32' ? v instanceof Int32Array : v instanceof Float64Array)));
    }),
    (a, r) => void (a.length = r.int(a.length)),
  ];
}

/** A string that names no GEMM variant: random letters, a valid name with a suffix, or very long. */
const badIsaName: Mutation = (a, r) => {
  const c = r.int(3);
  const junk = Array.from({ length: 1 + r.int(40) }, () => String.fromCharCode(97 + r.int(26))).join('');
  a[0] = c === 0 ? junk : c === 1 ? `${r.pick(['scalar', 'avx2', 'avx512'])}${junk}` : `avx2${' '.repeat(64 + r.int(64))}`;
};

const ENTRIES: Entry[] = [
  {
    // callValid false: a valid call would change the variant for the rest of the process
    name: 'setIsa', kinds: ['str'], callValid: false,
    valid: () => ['scalar'],
    bad: [badIsaName],
  },
  {
    name: 'setThreads', kinds: ['int'], callValid: false,
    valid: () => [1],
    bad: [outside(0, 0, 1024)],
  },
  {
    name: 'poolProfile', kinds: ['int'],
    valid: () => [0],
    bad: [outside(0, 0, 1)],
  },
  {
    name: 'tuneMalloc', kinds: ['int', 'int'],
    valid: () => [2 ** 30, 2 ** 31 - 1],
    bad: [neg(0), neg(1), (a, r) => void (a[r.int(2)] = 2 ** 31 + r.int(2 ** 40))],
  },
  {
    // C[2,3,4] = A[2,3,5] · B[1,5,4]
    name: 'sgemm', kinds: ['f32', 'f32', 'f32', 'int', 'int', 'int', 'int', 'int', 'int', 'int', 'int', 'int'],
    valid: () => [f32(30), f32(20), f32(24), 2, 2, 1, 3, 4, 5, 0, 0, 1],
    bad: [shorter(0), shorter(1), shorter(2), neg(3), grow(3), outside(4, 1, 2), outside(5, 1, 1), neg(6), grow(6), neg(7), grow(7), neg(8), grow(8), outside(9, 0, 1), outside(10, 0, 1), outside(11, 0, 1024)],
  },
  {
    // out[3,4] = a[3,4] (strides 4,1) op b[4] broadcast over rows (strides 0,1)
    name: 'binary', kinds: ['int', 'f32', 'i32', 'f32', 'i32', 'f32', 'i32'],
    valid: () => [0, f32(12), i32([4, 1]), f32(4), i32([0, 1]), f32(12), i32([3, 4])],
    bad: [outside(0, 0, 6), shorter(1), shorter(3), shorter(5), growElement(2), growElement(4), negElement(2), negElement(4), resize(2), resize(4), resize(6), growElement(6), negElement(6)],
  },
  {
    name: 'unary', kinds: ['int', 'f32', 'f32'],
    valid: () => [0, f32(10), f32(10)],
    bad: [outside(0, 0, 9), shorter(2), (a, r) => void (a[1] = f32(11 + r.int(100)))],
  },
  {
    name: 'reduce', kinds: ['int', 'f32', 'f32', 'int', 'int'],
    valid: () => [0, f32(12), f32(3), 3, 4],
    bad: [outside(0, 0, 2), shorter(1), shorter(2), neg(3), grow(3), outside(4, 1, 4), grow(4)],
  },
  ...(['softmax', 'softmaxFused'] as const).map((name): Entry => ({
    name, kinds: ['f32', 'f32', 'int', 'int'],
    valid: () => [f32(12), f32(12), 3, 4],
    bad: [shorter(0), shorter(1), neg(2), grow(2), outside(3, 1, 4), grow(3)],
  })),
  {
    name: 'softmaxFusedGrad', kinds: ['f32', 'f32', 'f32', 'int', 'int'],
    valid: () => [f32(12), f32(12), f32(12), 3, 4],
    bad: [shorter(0), shorter(1), shorter(2), neg(3), grow(3), outside(4, 1, 4), grow(4)],
  },
  {
    // dst (transposed, strides 1,2) <- src[2,3] (strides 3,1)
    name: 'copy', kinds: ['f32', 'int', 'i32', 'f32', 'int', 'i32', 'i32'],
    valid: () => [f32(6), 0, i32([3, 1]), f32(6), 0, i32([1, 2]), i32([2, 3])],
    bad: [shorter(0), shorter(3), neg(1), grow(1), neg(4), grow(4), growElement(2), growElement(5), negElement(2), negElement(5), resize(2), resize(5), resize(6), growElement(6), negElement(6)],
  },
  {
    name: 'transpose2d', kinds: ['f32', 'f32', 'int', 'int', 'int'],
    valid: () => [f32(24), f32(24), 2, 3, 4],
    bad: [shorter(0), shorter(1), neg(2), grow(2), neg(3), grow(3), neg(4), grow(4)],
  },
  {
    // out[2][4 rows of 3] = x[2][5 rows of 3][idx]
    name: 'gatherRows', kinds: ['f32', 'i32', 'f32', 'int', 'int', 'int'],
    valid: () => [f32(30), i32([0, 4, 2, 2]), f32(24), 3, 5, 2],
    bad: [shorter(0), shorter(2), badIndex(1, 5), longer(1), neg(3), grow(3), neg(4), grow(4), outside(5, 1, 2), grow(5)],
  },
  {
    name: 'scatterAddRows', kinds: ['f32', 'i32', 'f32', 'int', 'int'],
    valid: () => [f32(12), i32([0, 4, 2, 2]), f32(15), 3, 5],
    bad: [shorter(0), shorter(2), badIndex(1, 5), longer(1), neg(3), grow(3), neg(4), grow(4)],
  },
  {
    name: 'crossEntropy', kinds: ['f32', 'i32', 'f32', 'f32', 'int', 'int'],
    valid: () => [f32(15), i32([0, 4, 2]), f32(3), f32(3), 3, 5],
    bad: [shorter(0), shorter(1), shorter(2), shorter(3), badIndex(1, 5), neg(4), grow(4), outside(5, 1, 5), grow(5)],
  },
  {
    name: 'crossEntropyGrad', kinds: ['f32', 'i32', 'f32', 'f32', 'dbl', 'f32', 'int', 'int'],
    valid: () => [f32(15), i32([0, 4, 2]), f32(3), f32(3), 0.5, f32(15), 3, 5],
    bad: [shorter(0), shorter(1), shorter(2), shorter(3), shorter(5), badIndex(1, 5), neg(6), grow(6), outside(7, 1, 5), grow(7)],
  },
  {
    name: 'rmsNorm', kinds: ['f32', 'f32', 'f32', 'f32', 'int', 'int', 'dbl'],
    valid: () => [f32(12), f32(4), f32(12), f32(3), 3, 4, 1e-5],
    bad: [shorter(0), shorter(1), shorter(2), shorter(3), neg(4), grow(4), outside(5, 1, 4), grow(5)],
  },
  {
    name: 'rmsNormGrad', kinds: ['f32', 'f32', 'f32', 'f32', 'f32', 'f32', 'int', 'int'],
    valid: () => [f32(12), f32(4), f32(3), f32(12), f32(12), f32(4), 3, 4],
    bad: [shorter(0), shorter(1), shorter(2), shorter(3), shorter(4), shorter(5), neg(6), grow(6), outside(7, 1, 4), grow(7)],
  },
  {
    name: 'siluMul', kinds: ['f32', 'f32', 'f32', 'f32', 'int'],
    valid: () => [f32(10), f32(10), f32(10), f32(10), 10],
    bad: [shorter(0), shorter(1), shorter(2), shorter(3), neg(4), grow(4)],
  },
  {
    name: 'siluMulGrad', kinds: ['f32', 'f32', 'f32', 'f32', 'f32', 'f32', 'int'],
    valid: () => [f32(10), f32(10), f32(10), f32(10), f32(10), f32(10), 10],
    bad: [shorter(0), shorter(1), shorter(2), shorter(3), shorter(4), shorter(5), neg(6), grow(6)],
  },
  {
    // out[T=2, d=3] = sum over K=2 slots of src[4 rows of 3]; slot 3 (the last row) is used
    name: 'moeCombine', kinds: ['f32', 'i32', 'f32', 'f32', 'int', 'int', 'int'],
    valid: () => [f32(12), i32([0, 3, 2, 2]), f32(4), f32(6), 2, 2, 3],
    bad: [shorter(0), shorter(1), shorter(2), shorter(3), badIndex(1, 4), neg(4), grow(4), outside(5, 1, 2), grow(5), outside(6, 1, 3), grow(6)],
  },
  {
    name: 'moeCombineGrad', kinds: ['f32', 'i32', 'f32', 'f32', 'f32', 'f32', 'int', 'int', 'int'],
    valid: () => [f32(12), i32([0, 3, 2, 2]), f32(4), f32(6), f32(12), f32(4), 2, 2, 3],
    bad: [shorter(0), shorter(1), shorter(2), shorter(3), shorter(4), shorter(5), badIndex(1, 4), neg(6), grow(6), outside(7, 1, 2), grow(7), outside(8, 1, 3), grow(8)],
  },
  {
    // 2 experts (rows 1 and 2 of x [3, d=2]), hid=3: ws = gate [2,3], up [2,3], down [3,2] each
    name: 'expertsForward', kinds: ['f32', 'f32list', 'i32', 'f32', 'f32', 'f32', 'f32', 'f32', 'int', 'int'],
    valid: () => [f32(6), Array.from({ length: 6 }, () => f32(6)), i32([0, 1, 3]), f32(6), f32(9), f32(9), f32(9), f32(9), 2, 3],
    bad: [shorter(0), shorter(3), shorter(4), shorter(5), shorter(6), shorter(7), outside(8, 1, 2), grow(8), outside(9, 1, 3), grow(9), ...expertLists(1), ...expertOffsets(2)],
  },
  {
    name: 'expertsBackward', kinds: ['f32', 'f32list', 'i32', 'f32', 'f32', 'f32', 'f32', 'f32', 'f32', 'f32list', 'f32', 'f32', 'f32', 'f32', 'int', 'int'],
    valid: () => [f32(6), Array.from({ length: 6 }, () => f32(6)), i32([0, 1, 3]), f32(9), f32(9), f32(9), f32(9), f32(6), f32(6), Array.from({ length: 6 }, () => f32(6)), f32(9), f32(9), f32(9), f32(6), 2, 3],
    bad: [
      ...[0, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13].map(shorter), outside(14, 1, 2), grow(14), outside(15, 1, 3), grow(15),
      ...expertLists(1), ...expertLists(9), ...expertOffsets(2),
    ],
  },
  {
    // y[2,4] = x[2,3] · W[3,4] (the serving engine's decode matmul)
    name: 'decodeMatmul', kinds: ['f32', 'f32', 'f32', 'int', 'int', 'int', 'int'],
    valid: () => [f32(6), f32(12), f32(8), 2, 3, 4, 1],
    bad: [shorter(0), shorter(1), shorter(2), neg(3), grow(3), neg(4), grow(4), neg(5), grow(5), outside(6, 0, 1024)],
  },
  {
    // one query row, H=2 heads over Hk=1 cached head, S=4 positions, dk=3, dv=2
    name: 'decodeAttend', kinds: ['f32', 'f32', 'f32', 'f32', 'int', 'int', 'int', 'int', 'int', 'dbl'],
    valid: () => [f32(6), f32(12), f32(8), f32(4), 4, 2, 1, 3, 2, 0.5],
    bad: [shorter(0), shorter(1), shorter(2), shorter(3), outside(4, 1, 4), outside(5, 1, 2), outside(6, 1, 1), outside(7, 1, 3), outside(8, 1, 2)],
  },
  {
    // two rows of one sequence at positions 2..3 (S = 4 cached), H=2 heads over Hk=1, dk=3, dv=2
    name: 'decodeAttendRows', kinds: ['f32', 'f32', 'f32', 'f32', 'int', 'int', 'int', 'int', 'int', 'int', 'dbl', 'int'],
    valid: () => [f32(12), f32(12), f32(8), f32(8), 2, 2, 2, 1, 3, 2, 0.5, 1],
    bad: [shorter(0), shorter(1), shorter(2), shorter(3), neg(4), grow(4), outside(5, 1, 2), grow(5), outside(6, 1, 2), outside(7, 1, 1), outside(8, 1, 3), outside(9, 1, 2), outside(11, 0, 1024)],
  },
  {
    // y[2,3] = SwiGLU of x[2,3] with h=4
    name: 'decodeFfn', kinds: ['f32', 'f32', 'f32', 'f32', 'f32', 'int', 'int', 'int', 'int'],
    valid: () => [f32(6), f32(12), f32(12), f32(12), f32(6), 2, 3, 4, 1],
    bad: [shorter(0), shorter(1), shorter(2), shorter(3), shorter(4), outside(5, 1, 2), grow(5), outside(6, 1, 3), grow(6), outside(7, 1, 4), grow(7), outside(8, 0, 1024)],
  },
  {
    // y[2,4] = x[2,3] · W[3,4] over the inputs with |x| >= 0.1 (native/sparse.c)
    name: 'sparseRows', kinds: ['f32', 'f32', 'f32', 'int', 'int', 'int', 'dbl', 'int'],
    valid: () => [f32(6), f32(12), f32(8), 2, 3, 4, 0.1, 1],
    bad: [
      shorter(0), shorter(1), shorter(2), outside(3, 1, 2), grow(3), outside(4, 1, 3), grow(4), outside(5, 1, 4), grow(5), outside(7, 0, 1024),
      (a, r) => void (a[6] = [-1 - r.next(), NaN, Infinity, -Infinity][r.int(4)]),
    ],
  },
  {
    // SwiGLU of M=2 rows, d=3, h=4 after the dense gate g [2,4] (native/sparse.c)
    name: 'sparseFfn', kinds: ['f32', 'f32', 'f32', 'f32', 'f32', 'f32', 'int', 'int', 'int', 'int'],
    valid: () => [f32(6), f32(8), f32(12), f32(12), f32(4), f32(6), 2, 3, 4, 1],
    bad: [
      shorter(0), shorter(1), shorter(2), shorter(3), shorter(4), shorter(5), outside(6, 1, 2), grow(6), outside(7, 1, 3), grow(7), outside(8, 1, 4), grow(8),
      outside(9, 0, 1024),
    ],
  },
  {
    name: 'adamw', kinds: ['f32', 'f32', 'f32', 'f32', 'i32', 'i32', 'f64', 'f64', 'dbl', 'dbl', 'dbl', 'dbl', 'dbl', 'dbl', 'int'],
    valid: () => [f32(10), f32(10), f32(10), f32(10), i32([0, 6]), i32([6, 4]), new Float64Array([1e-3, 1e-3]), new Float64Array([0.1, 0]), 0.9, 0.95, 0.1, 0.05, 1e-8, 1, 1],
    bad: [
      shorter(0), shorter(1), shorter(2), shorter(3), shorter(6), shorter(7), negElement(4), negElement(5), resize(4), resize(5), outside(14, 0, 1024),
      (a, r) => void (a[4] = i32([0, 7 + r.int(2 ** 30)])),
      (a, r) => void (a[5] = i32([6, 5 + r.int(2 ** 30)])),
    ],
  },
];

describe(probe.loaded ? 'native entry points refuse bad arguments (fuzz)' : `native entry points refuse bad arguments (fuzz) [skipped: ${skipReason}]`, function () {
  this.timeout(120000);
  before(function () {
    if (skipReason) this.skip();
  });

  it('covers every entry point of the addon that takes arguments (gemmInfo and decodeTrim take none)', () => {
    const m = nativeAddon() as unknown as Record<string, unknown>;
    const exported = Object.getOwnPropertyNames(m).filter((k) => typeof m[k] === 'function' && k !== 'blasInfo' && k !== 'gemmInfo' && k !== 'decodeTrim').sort();
    assert.deepEqual(ENTRIES.map((e) => e.name).sort(), exported);
  });

  for (const e of ENTRIES) {
    it(`${e.name}: a valid call succeeds; ${SETS_PER_ENTRY} random bad argument sets each throw and change no array`, () => {
      const fn = (nativeAddon() as unknown as Record<string, (...a: unknown[]) => unknown>)[e.name];
      if (e.callValid !== false) assert.doesNotThrow(() => fn(...e.valid()), `${e.name}: the valid call must succeed`);
      const muts = [...e.bad, ...generic(e.kinds)];
      const seed = 0x5eed + e.name.length * 7919 + e.name.charCodeAt(0);
      const r = new Rand(seed);
      const kinds = new Map<string, number>();
      for (let k = 0; k < SETS_PER_ENTRY; k++) {
        const a = e.valid();
        const v = e.valid();
        // One to three mutations; each alone makes the set bad. A later one that does not apply
        // to an argument an earlier one already replaced (e.g. shortening a string) is skipped.
        const nMut = 1 + r.int(3);
        const applied: number[] = [];
        for (let j = 0; j < nMut; j++) {
          const m = r.int(muts.length);
          try {
            muts[m](a, r, v);
            applied.push(m);
          } catch (err) {
            if (j === 0) throw err;
          }
        }
        const arrays = a.filter((v): v is Float32Array => ArrayBuffer.isView(v)).map((v) => [v, Buffer.from(new Uint8Array(v.buffer, v.byteOffset, v.byteLength))] as const);
        let threw: unknown = null;
        try {
          fn(...a);
        } catch (err) {
          threw = err;
        }
        const what = `${e.name} set ${k} (seed ${seed}, mutations ${applied.join('+')}): ${a.map((v) => (ArrayBuffer.isView(v) ? `${v.constructor.name}(${(v as Float32Array).length})` : typeof v === 'symbol' ? 'symbol' : JSON.stringify(v) ?? String(v))).join(', ')}`;
        assert.ok(threw instanceof Error, `${what}: did not throw`);
        assert.match(threw.message, /^moecat_native/, what);
        kinds.set(threw.constructor.name, (kinds.get(threw.constructor.name) ?? 0) + 1);
        for (const [v, before] of arrays) assert.ok(before.equals(Buffer.from(new Uint8Array(v.buffer, v.byteOffset, v.byteLength))), `${what}: an array changed`);
      }
      assert.ok((kinds.get('RangeError') ?? 0) > 0 && (kinds.get('TypeError') ?? 0) > 0, `both range and type errors exercised: ${JSON.stringify([...kinds])}`);
    });
  }
});
