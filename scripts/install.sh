#!/usr/bin/env bash
# Installs autopeft into the current Python environment, as the README says: PyTorch first (the CPU wheel,
# unless a torch is already installed — on a GPU box install the CUDA build you want before this), then the
# project with its test and report extras, then the packages that ship the built-in model aliases.
# Used by scripts/demo.sh and scripts/test.sh (which .ci/run calls).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install torch==2.13.0
fi
python -m pip install -e ".[dev]"
bash scripts/install_models.sh
