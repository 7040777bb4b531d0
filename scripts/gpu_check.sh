#!/usr/bin/env bash
# Everything in shared/GPU.md in one run (< 8 min), one report file: benchmarks/gpu_check.py.
#
#   bash scripts/gpu_check.sh --fetch   # here, once (needs the package registries): py3.12 wheels of
#                                       # what a bare CUDA image lacks into .whl/, GL loader debs into .gl/
#   bash scripts/gpu_check.sh [ARGS]    # on the GPU machine (or on CPU: tiny sizes, says what it skipped);
#                                       # ARGS go to benchmarks/gpu_check.py (--budget-s, --only, --out)
#
# On the device machine, through the session's `run` tool:
#   run(command="bash scripts/gpu_check.sh", carry=[".whl", ".gl"], timeout_s=540)
# The report is $OUT/gpu_check.json (REPORT=path to change it); it is rewritten after every check.
# Environment: PYTHON (default .venv/bin/python if present, else python3), BUDGET_S (default 420).
set -uo pipefail
cd "$(dirname "$0")/.."

# What a bare CUDA image with torch lacks for these checks (the trainer at paper size, sampling, the
# in-process renderers; smplx: the stand-in hands import it). Not carried: ray (rendering is measured in-process).
# PyOpenGL 3.1.0 (pyrender's pin) exists only as an sdist: --fetch builds its pure-Python wheel.
WHEELS=(diffusers==0.42.1 importlib_metadata==8.7.0 pyrender==0.1.45 trimesh==5.2.0 pyglet==2.1.19
        freetype-py==2.5.1 smplx==0.1.28 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0)
GL_DEBS=(libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
LIMIT_MIB=60  # the working tree travels in 64 MiB, the repo itself included

if [ "${1:-}" = "--fetch" ]; then
  PIP=${PYTHON:-python3}
  rm -rf .whl .gl && mkdir -p .whl .gl
  plat=()
  for p in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux_2_12 manylinux2010 manylinux_2_5 manylinux1; do
    plat+=(--platform "${p}_x86_64")
  done
  "$PIP" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plat[@]}" --platform any -d .whl "${WHEELS[@]}" || { echo "gpu_check --fetch: wheel download failed" >&2; exit 1; }
  "$PIP" -m pip wheel -q --no-deps -w .whl PyOpenGL==3.1.0 || { echo "gpu_check --fetch: PyOpenGL wheel build failed" >&2; exit 1; }
  (cd .gl && apt-get -o APT::Architecture=amd64 download "${GL_DEBS[@]}") >/dev/null \
    || echo "gpu_check --fetch: GL debs not downloaded (apt-get update first?); NVIDIA EGL will need the image's own" >&2
  size=$(du -sm .whl .gl | awk '{s += $1} END {print s}')
  echo "fetched $(ls .whl | wc -l) wheels and $(ls .gl | wc -l) debs: ${size} MiB (limit ${LIMIT_MIB})"
  [ "$size" -le "$LIMIT_MIB" ] || { echo "gpu_check --fetch: ${size} MiB is over ${LIMIT_MIB} MiB" >&2; exit 1; }
  exit 0
fi

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYOPENGL_PLATFORM=egl PYTHONUNBUFFERED=1

# NVIDIA EGL: the GL loader libraries (glvnd) from .gl/ when the image has none; the driver's vendor file.
if command -v nvidia-smi >/dev/null 2>&1; then
  if ! ldconfig -p | grep -q 'libEGL.so.1' && ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
    echo "gpu_check: unpacked $(ls .gl/*.deb | wc -l) GL loader debs"
  fi
  vendor=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  if [ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ] && [ -f "$vendor" ]; then
    export __EGL_VENDOR_LIBRARY_FILENAMES=$vendor
  fi
fi

# Python packages: from .whl/ when the interpreter lacks them.
if ! "$PY" -c "import diffusers, pyrender, trimesh, OpenGL, zarr" >/dev/null 2>&1; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    site=/tmp/manivideo_site
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
      || { echo "gpu_check: installing the carried wheels failed" >&2; exit 1; }
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    echo "gpu_check: installed $(ls .whl/*.whl | wc -l) carried wheels into $site"
  else
    echo "gpu_check: $PY lacks diffusers/pyrender/trimesh/PyOpenGL/zarr and there is no .whl/ (run --fetch here, carry .whl)" >&2
  fi
fi

exec "$PY" benchmarks/gpu_check.py --out "${REPORT:-${OUT:-out}/gpu_check.json}" --budget-s "${BUDGET_S:-420}" "$@"
