#!/usr/bin/env bash
# The webgpu backend on a real GPU (issue 21 item 9). Runs on a machine with an NVIDIA driver
# but no network and no Node.js, from the archive scripts/device/pack.sh builds (Node, the
# Vulkan loader and the built project, < 64 MiB):
#   bash scripts/device/gpu-check.sh [.device/moecat-gpu.tar.xz]
# Build the archive on a machine with network (scripts/device/pack.sh), copy the repository and
# .device/moecat-gpu.tar.xz (ignored by git, ~28 MiB) to the GPU machine, run this from the
# repository root. When $OUT is set the JSON lines also go to $OUT/gpu-check.jsonl.
# Prints the adapter and what --backend auto picks, trains configs/tiny.yaml twice (the two
# param_hash lines must match), and measures matMul GFLOP/s up to 4096^3 and training tokens/s
# and achieved GFLOP/s on configs/gpu-medium.yaml. Results also go to $OUT (when set) as JSON lines.
set -uo pipefail
archive=${1:-.device/moecat-gpu.tar.xz}
[ -f "$archive" ] || { echo "gpu-check: no archive at $archive (build it with scripts/device/pack.sh)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xJf "$archive" -C "$work"
export PATH="$work/node/bin:$PATH"
export LD_LIBRARY_PATH="$work/vulkan${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
results=${OUT:-$work}/gpu-check.jsonl
# Smaller settings for a dry run on a software adapter: GPU_CHECK_STEPS, GPU_CHECK_SIZES,
# GPU_CHECK_CONFIGS (extra configs after tiny; 'none' for none).
tiny_steps=${GPU_CHECK_STEPS:-20}
sizes=${GPU_CHECK_SIZES:-1024,2048,4096}
configs=${GPU_CHECK_CONFIGS:-gpu-medium}

# The NVIDIA Vulkan ICD: the driver's json when installed, else one pointing at libGLX_nvidia.
if [ -z "${VK_ICD_FILENAMES:-}" ]; then
  for f in /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.x86_64.json \
    /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; do
    [ -f "$f" ] && export VK_ICD_FILENAMES=$f && break
  done
fi
if [ -z "${VK_ICD_FILENAMES:-}" ]; then
  lib=$( (ldconfig -p 2>/dev/null | sed -n 's/.*libGLX_nvidia\.so\.0 .*=> //p'; ls /usr/lib/x86_64-linux-gnu/libGLX_nvidia.so.0 /usr/lib64/libGLX_nvidia.so.0 2>/dev/null) | head -1)
  if [ -n "$lib" ]; then
    printf '{"file_format_version":"1.0.0","ICD":{"library_path":"%s","api_version":"1.3.0"}}\n' "$lib" > "$work/nvidia_icd.json"
    export VK_ICD_FILENAMES=$work/nvidia_icd.json
  fi
fi
# Newer Vulkan loaders read VK_DRIVER_FILES; older ones VK_ICD_FILENAMES.
[ -n "${VK_ICD_FILENAMES:-}" ] && export VK_DRIVER_FILES=${VK_DRIVER_FILES:-$VK_ICD_FILENAMES}
echo "gpu-check: node $(node --version), VK_ICD_FILENAMES=${VK_ICD_FILENAMES:-unset}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true

cd "$work/moecat"
status=0
echo "== adapter (auto must pick webgpu on a hardware adapter)"
node dist/scripts/device/probe.js auto 2>&1 | grep -v 'artificially reduced' || status=1
node dist/scripts/device/probe.js webgpu 2>&1 | grep -v 'artificially reduced' || status=1

echo "== configs/tiny.yaml twice on webgpu ($tiny_steps steps): same param_hash"
sets=(--set 'data.synthetic={}' --set "train.steps=$tiny_steps" --set train.checkpointEvery=0 --set "train.paramHashEvery=$tiny_steps"
  --set 'optim.schedule={type: wsd, warmupSteps: 1, decaySteps: 2}')
h=()
for i in 1 2; do
  line=$(node dist/cli/main.js train --config configs/tiny.yaml --backend webgpu --out "$work/tiny$i" "${sets[@]}" 2>&1 | grep -o 'param_hash [0-9a-f]*' | tail -1)
  echo "run $i: $line"
  h+=("${line#param_hash }")
done
if [ -n "${h[0]}" ] && [ "${h[0]}" = "${h[1]:-}" ]; then echo "tiny: reruns identical"; else echo "tiny: RERUNS DIFFER or failed"; status=1; fi
printf '{"bench":"gpu-check tiny rerun","hash1":"%s","hash2":"%s"}\n' "${h[0]:-}" "${h[1]:-}" >> "$results"

echo "== bench: op overhead, matMul to 4096^3, gpu-medium training"
node dist/scripts/bench/webgpu.js --sizes "$sizes" --configs tiny --steps 3 2> >(grep -v 'artificially reduced' >&2) | tee -a "$results" || status=1
for c in ${configs//,/ }; do
  { [ "$c" = tiny ] || [ "$c" = none ]; } && continue
  node dist/scripts/bench/webgpu.js --sizes 64 --configs "$c" --kernels fused --steps 3 2> >(grep -v 'artificially reduced' >&2) | grep '"training"' | tee -a "$results" || status=1
done
exit $status
