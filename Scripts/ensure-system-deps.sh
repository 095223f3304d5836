#!/usr/bin/env bash
# Installs the Debian packages Silo builds and tests with, if they are missing. Idempotent.
set -euo pipefail
missing=()
dpkg -s libopenblas-dev >/dev/null 2>&1 || missing+=(libopenblas-dev)
command -v unzip >/dev/null 2>&1 || missing+=(unzip)
# The reference venv (Scripts/setup_venv.sh) needs venv with ensurepip (Debian splits it out).
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing ${missing[*]} (apt-get)…"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
