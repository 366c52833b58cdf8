#!/usr/bin/env bash
# Download, into .whl/, the wheels bench/gpu_sdxl.py needs on a GPU machine without network
# that has PyTorch, transformers, peft and accelerate but not diffusers or pydantic.
# Versions: the ones this checkout's virtualenv runs (make install), for CPython 3.12 on x86-64 Linux
# (set PY_VERSION for another Python). See bench/README.md for the steps on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
PY_VERSION=${PY_VERSION:-3.12}
PACKAGES=(diffusers pydantic pydantic-core pydantic-settings annotated-types typing-inspection python-dotenv typing-extensions)
rm -rf .whl && mkdir -p .whl
specs=()
for name in "${PACKAGES[@]}"; do
    specs+=("$name==$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")")
done
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
    "${platforms[@]}" -d .whl "${specs[@]}"
ls .whl
