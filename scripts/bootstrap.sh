#!/usr/bin/env bash
# Create (or reuse) the pinned virtual environment and install sei into it, editable.
# The venv lives outside the checkout, keyed on requirements.lock, so a fresh clone reuses it.
# Prints the venv path on its last line.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${SEI_PYTHON:-python3.11}
command -v "$py" >/dev/null || py=python3
key=$(cat "$root/requirements.lock" | sha256sum | cut -c1-12)
venv=${SEI_VENV:-$HOME/.cache/sei/venv-$key}
if [ ! -f "$venv/.complete" ]; then
  echo "sei: creating the environment in $venv (first run only, about a minute)" >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade "pip>=24" >&2
  "$venv/bin/pip" install -q -r "$root/requirements.lock" 2> >(grep -v "is ignored" >&2)
  touch "$venv/.complete"
fi
"$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$root" 2> >(grep -v "is ignored" >&2)
echo "$venv"
