#!/usr/bin/env bash
# The main job on the embedded default data and weights: `sei demo` (see README).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$(bash "$root/scripts/bootstrap.sh" | tail -n 1)
cd "$root"
"$venv/bin/sei" demo "$@"
