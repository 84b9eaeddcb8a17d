#!/usr/bin/env bash
# The project's checks: set-up (the venv, and a headless browser where apt can install one), lint, then
# the whole test suite (doctests included).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$(bash "$root/scripts/bootstrap.sh" | tail -n 1)
bash "$root/scripts/install_browser.sh"  # headless Chromium for the sei app page tests (skipped without it)
cd "$root"
"$venv/bin/ruff" check src tests benchmarks scripts
"$venv/bin/ruff" format --check src tests benchmarks scripts
"$venv/bin/python" -m pytest -q "$@"
