#!/usr/bin/env bash
# Locates (or, as root on Debian, installs) a Dawn-compatible software Vulkan driver and prints
# the line that selects it:   eval "$(scripts/webgpu/software-adapter.sh)"
#
# Dawn refuses Mesa < 25 lavapipe (bookworm's 22.3 lacks shaderUniform*ArrayDynamicIndexing);
# bookworm-backports ships Mesa 25. Messages go to stderr; stdout carries only the export line.
# Exit 0 with the line printed; exit 1 (nothing on stdout) when no usable driver can be had.
#   --no-install   only locate, never touch apt
set -euo pipefail
install=1
[ "${1:-}" = "--no-install" ] && install=0
say() { echo "software-adapter: $*" >&2; }

# The Mesa version of the lavapipe that an ICD json points at, or empty.
lvp_version() {
  local lib
  lib=$(sed -n 's/.*"library_path" *: *"\([^"]*\)".*/\1/p' "$1" | head -1)
  [ -n "$lib" ] || return 0
  case "$lib" in /*) ;; *) lib="$(dirname "$1")/$lib" ;; esac
  # Installed copies are owned by mesa-vulkan-drivers; ask dpkg first, then the library's strings.
  if [ -f "$lib" ] || lib=$(ls /usr/lib/*/"$(basename "$lib")" 2>/dev/null | head -1); then
    dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | sed 's/^[0-9]*://; s/[-~+].*//' && return 0
    grep -aoE 'Mesa [0-9]+\.[0-9]+\.[0-9]+' "$lib" | head -1 | cut -d' ' -f2
  fi
}

find_icd() {
  local f v
  for f in ${MOECAT_LVP_ICD:-} /usr/share/vulkan/icd.d/lvp_icd*.json; do
    [ -f "$f" ] || continue
    v=$(lvp_version "$f")
    if [ -n "$v" ] && [ "${v%%.*}" -ge 25 ]; then echo "$f"; return 0; fi
    [ -n "$v" ] && say "$f is Mesa $v; Dawn needs Mesa >= 25"
  done
  return 1
}

# grep reads all of ldconfig's output (grep -q would exit at the first match, and under pipefail
# ldconfig's SIGPIPE would fail the test at random).
have_loader() { ldconfig -p 2>/dev/null | grep 'libvulkan\.so\.1' >/dev/null; }

icd=$(find_icd || true)
if { [ -z "$icd" ] || ! have_loader; } && [ "$install" = 1 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "no Mesa >= 25 lavapipe found and cannot install (needs root and apt-get)"
    exit 1
  fi
  . /etc/os-release
  if [ "${VERSION_CODENAME:-}" = bookworm ] && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    say "adding bookworm-backports to apt sources"
    echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/bookworm-backports.list
  fi
  say "installing mesa-vulkan-drivers (Mesa >= 25) and libvulkan1"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  if [ "${VERSION_CODENAME:-}" = bookworm ]; then
    apt-get install -y -qq --no-install-recommends -t bookworm-backports mesa-vulkan-drivers libvulkan1 >&2
  else
    apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1 >&2
  fi
  icd=$(find_icd || true)
fi
if [ -z "$icd" ]; then say "no Mesa >= 25 lavapipe ICD found"; exit 1; fi
if ! have_loader; then say "the Vulkan loader libvulkan.so.1 is missing (apt-get install libvulkan1)"; exit 1; fi
say "lavapipe: $icd (Mesa $(lvp_version "$icd"))"
echo "export VK_ICD_FILENAMES=$icd"
