#!/usr/bin/env bash
# Builds the anchor environment: the old stack (TF 2.15 + tf.keras 2 +
# tensorflow-addons' LazyAdam), all from the package registry.
#
#   bash benchmarks/tfa_env.sh [VENV]      # default: benchmarks/.tfa-venv
#
# Needs python3.11 (TF 2.15 has no wheels for 3.12+). A few minutes; ~1.5 GB.
# Idempotent: an existing venv that already imports both packages is kept.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-$here/.tfa-venv}"
py="${PYTHON:-python3.11}"
check='import tensorflow as tf, tensorflow_addons as tfa; print("tf", tf.__version__, "tfa", tfa.__version__)'
if [ -x "$venv/bin/python" ] && TF_CPP_MIN_LOG_LEVEL=3 "$venv/bin/python" -W ignore -c "$check" 2>/dev/null; then
  echo "ok: $venv"; exit 0
fi
"$py" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q "tensorflow-cpu==2.15.1" "tensorflow-addons==0.23.0" "numpy<2"
TF_CPP_MIN_LOG_LEVEL=3 "$venv/bin/python" -W ignore -c "$check"
echo "ok: $venv"
