#!/usr/bin/env bash
# Create .venv and install hspace (editable) with its test extras. Idempotent: it does nothing when
# pyproject.toml has not changed since the last install. Where there is no NVIDIA GPU, torch 2.13.0 goes in
# first (the CPU build where pip's index offers it, as on the project's machines), so the package's torch range
# is already met and no other build is pulled.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.hspace-installed
wanted=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
      .venv/bin/python -m pip install -q "torch>=2.2,<3"
    else
      .venv/bin/python -m pip install -q torch==2.13.0
    fi
  fi
  .venv/bin/python -m pip install -q -e ".[test]"
  echo "$wanted" > "$stamp"
fi
