#!/usr/bin/env bash
# Installs manivideo on a fresh Debian/Ubuntu machine: Mesa EGL (headless software GL;
# NVIDIA EGL comes with the NVIDIA driver), a virtual environment in .venv, PyTorch, and
# the project with its dev tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends libegl1 libegl-mesa0 libgl1-mesa-dri libglvnd0 >/dev/null
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first: 2.13.0 resolves to the local CPU wheel here; the project's range admits it,
# so the project install below does not pull another (CUDA) build.
.venv/bin/python -m pip install -q "torch==2.13.0" || .venv/bin/python -m pip install -q "torch>=2.3,<2.14"
.venv/bin/python -m pip install -q -e ".[dev,viewer]"
echo "installed: $(.venv/bin/python -c 'import torch, zarr, ray, pyrender; print("torch", torch.__version__, "zarr", zarr.__version__, "ray", ray.__version__)')"
