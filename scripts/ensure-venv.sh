#!/usr/bin/env bash
# Create .venv and install radsync into it (editable) when missing or when pyproject.toml changed.
# Sourced by ./radsync and ./run-tests; EXTRAS selects optional dependency groups (e.g. "test").
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
extras="${EXTRAS:-}"
stamp="$venv/.installed-${extras:-base}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  spec="$root"
  [ -n "$extras" ] && spec="$root[$extras]"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec" 1>&2
  touch "$stamp"
fi
