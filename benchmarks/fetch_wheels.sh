#!/usr/bin/env bash
# Downloads, here (with the registry), the wheels that gpu_check.sh installs on
# the GPU image (CUDA torch and JAX on Python 3.12, no Keras, no TensorFlow, no
# network): Keras and the pure-Python or cp312 manylinux wheels it needs.
#
#   bash benchmarks/fetch_wheels.sh [DIR]     # default benchmarks/wheels (git-ignored)
#
# Versions are those of this environment's Keras stack where installed
# (PYTHON, default python3), else the newest. ~10 MB.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${1:-$here/wheels}"
py="${PYTHON:-python3}"
pkgs="keras namex optree typing-extensions absl-py rich markdown-it-py mdurl pygments
      h5py ml-dtypes packaging pytest iniconfig pluggy"
specs=$("$py" - $pkgs <<'PY'
import sys
from importlib import metadata
for name in sys.argv[1:]:
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(name)
PY
)
mkdir -p "$dir"
# shellcheck disable=SC2086
"$py" -m pip download --no-deps --only-binary=:all: -d "$dir" \
  --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any $specs
ls -1 "$dir"
