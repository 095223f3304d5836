#!/usr/bin/env bash
# Creates the Python venv of the fixture generators, if missing, and installs into it what they need:
# torch==2.13.0+cpu, numpy, safetensors, gguf, transformers, tokenizers, sentencepiece, peft, and the metric
# references rouge-score and sacrebleu (Scripts/fixtures/metrics.py). Idempotent: a venv
# that already has the pinned versions is left alone. Prints the venv's python path on stdout.
#
#   SILO_HOME   cache directory (default ~/.cache/silo); the venv is $SILO_HOME/venv
#   PYTHON      interpreter used to create the venv (default python3, needs >= 3.10)
set -euo pipefail

SILO_HOME="${SILO_HOME:-$HOME/.cache/silo}"
VENV="$SILO_HOME/venv"
PY="$VENV/bin/python"
PACKAGES=(numpy==2.4.6 safetensors==0.8.0 gguf==0.19.0 transformers==5.23.0 tokenizers==0.23.3 sentencepiece==0.2.3
          protobuf==7.36.2 peft==0.21.2 accelerate==1.15.0 rouge-score==0.1.2 sacrebleu==2.6.0 nltk==3.10.4 cryptography==50.0.2
          absl-py==2.5.1)
TORCH="torch==2.13.0+cpu"

installed() {
  "$PY" - <<'EOF' >/dev/null 2>&1
import importlib.metadata as m
want = {"torch": "2.13.0+cpu", "numpy": "2.4.6", "safetensors": "0.8.0", "gguf": "0.19.0",
        "transformers": "5.23.0", "tokenizers": "0.23.3", "sentencepiece": "0.2.3", "protobuf": "7.36.2",
        "peft": "0.21.2", "accelerate": "1.15.0", "rouge-score": "0.1.2", "sacrebleu": "2.6.0", "nltk": "3.10.4", "cryptography": "50.0.2",
        "absl-py": "2.5.1"}
assert all(m.version(name) == version for name, version in want.items())
EOF
}

if [ ! -x "$PY" ]; then
  echo "Creating venv $VENV" >&2
  mkdir -p "$SILO_HOME"
  "${PYTHON:-python3}" -m venv "$VENV" >&2
fi

if ! installed; then
  echo "Installing $TORCH ${PACKAGES[*]} into $VENV" >&2
  # The +cpu wheel comes from pip's configured index or find-links (this machine image ships it).
  "$PY" -m pip install --quiet "$TORCH" >&2
  "$PY" -m pip install --quiet "${PACKAGES[@]}" >&2
  installed || { echo "setup_venv.sh: $VENV still lacks the pinned packages" >&2; exit 1; }
fi

echo "$PY"
