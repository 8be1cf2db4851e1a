#!/usr/bin/env node
/*
 * Builds the native kernel addon (native/build/Release/moecat_native.node) with node-gyp. It
 * needs only a C compiler (the one node-gyp needs) and Node's headers: moecat brings its own
 * GEMM, so no BLAS library is involved. When anything is missing or the build fails it prints
 * one line and exits 0: the addon is an accelerator, never a requirement (the backend order
 * falls back to wasm, then tfjs' JS kernels, when the file is absent).
 *
 *   node native/build.js            # build if possible, never fail
 *   node native/build.js --strict   # exit 1 when the addon cannot be built (CI, development)
 *   node native/build.js --verbose  # show node-gyp's output
 *   MOECAT_NATIVE=0                 # skip the build
 *
 * Plain JavaScript on purpose: it runs at install time, before TypeScript is compiled.
 */
'use strict';
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

const here = __dirname;
const strict = process.argv.includes('--strict');
const verbose = process.argv.includes('--verbose');
const tag = 'moecat native kernels:';

function done(msg, ok) {
  console.log(`${tag} ${msg}`);
  process.exit(ok || !strict ? 0 : 1);
}

function findNodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp, // npm sets this for lifecycle scripts
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  try {
    candidates.push(require.resolve('node-gyp/bin/node-gyp.js'));
  } catch {
    /* not a dependency */
  }
  return candidates.find((c) => c && fs.existsSync(c)) || null;
}

/** Node's own headers, so node-gyp needs no download (npm here is configured with nodedir=/usr). */
function findNodeDir() {
  const candidates = [process.env.npm_config_nodedir, path.resolve(path.dirname(process.execPath), '..'), '/usr'];
  return candidates.find((d) => d && fs.existsSync(path.join(d, 'include', 'node', 'node_api.h'))) || null;
}

function main() {
  if (process.env.MOECAT_NATIVE === '0') done('skipped (MOECAT_NATIVE=0)', true);
  const gyp = findNodeGyp();
  if (!gyp) done('not built: node-gyp not found; the cpu-native backend is unavailable', false);
  const nodedir = findNodeDir();
  const args = [gyp, 'rebuild'];
  if (nodedir) args.push(`--nodedir=${nodedir}`);
  const t0 = Date.now();
  const r = spawnSync(process.execPath, args, { cwd: here, encoding: 'utf8', stdio: verbose ? 'inherit' : 'pipe' });
  const out = path.join(here, 'build', 'Release', 'moecat_native.node');
  if (r.status !== 0 || !fs.existsSync(out)) {
    if (!verbose) {
      const tail = `${r.stdout || ''}${r.stderr || ''}`.trim().split('\n').slice(-15).join('\n');
      if (strict && tail) console.error(tail);
    }
    done(`build failed (node-gyp exit ${r.status}${r.error ? `, ${r.error.message}` : ''}; a C compiler such as gcc or clang is needed); the cpu-native backend is unavailable. Rerun with: node native/build.js --verbose`, false);
  }
  done(`built ${path.relative(process.cwd(), out)} in ${((Date.now() - t0) / 1000).toFixed(1)} s`, true);
}

main();
