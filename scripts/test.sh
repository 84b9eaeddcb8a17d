#!/usr/bin/env bash
# The project's checks: set-up, lint, then the whole test suite (doctests included).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$(bash "$root/scripts/bootstrap.sh" | tail -n 1)
cd "$root"
"$venv/bin/ruff" check src tests benchmarks
"$venv/bin/python" -m pytest -q "$@"
