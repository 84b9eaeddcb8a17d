#!/usr/bin/env bash
# Wheels of sei's dependencies for a GPU machine that has Python, torch and the usual scientific
# packages but cannot reach a package index (benchmarks/gpu_check.py runs there; docs/performance.md, "GPU").
#
#   bash benchmarks/gpu_wheels.sh [--python-version 3.12] [--dest gpu_wheels] [--have FREEZE] [--all] [--limit-mib 50]
#
# Downloads, with `pip download --no-deps`, the exact pins of requirements.lock that such a machine
# lacks, as binary wheels for its Python (default 3.12, manylinux x86-64), into DEST (git-ignored).
# Never downloaded: the torch stack (torch, torchvision, triton, nvidia-*, cuda-*), which the machine
# brings for its own GPU and driver, and the development tools the check does not run (ruff; selenium
# and its own dependencies, for the browser tests). Also skipped, unless --all: the packages
# named in FREEZE (`python3 -m pip freeze` of the target, if you have it), else the scientific stack
# listed in BASE below, which a GPU image with PyTorch usually holds (sei asks only for recent
# versions of them: pyproject.toml); deepinv, pinned exactly, is skipped only if FREEZE has its pin. Fails when the wheels exceed --limit-mib (what travels to the
# machine is limited: everything at once, --all, is about 150 MiB).
#
# On the GPU machine, from the repository root (PYTHONPATH instead of `pip install -e .`, which would
# need a build backend from the index and would resolve sei's torch pin against the machine's torch):
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/sei_site gpu_wheels/*.whl \
#     && export PYTHONPATH=/tmp/sei_site:$PWD/src && python3 benchmarks/gpu_check.py --out $OUT/gpu_check.json
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python_version=3.12
dest="$root/gpu_wheels"
have=""
all=0
limit_mib=50
while [ $# -gt 0 ]; do
    case "$1" in
        --python-version) python_version=$2; shift 2 ;;
        --dest) dest=$2; shift 2 ;;
        --have) have=$2; shift 2 ;;
        --all) all=1; shift ;;
        --limit-mib) limit_mib=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "gpu_wheels.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
python=${PYTHON:-python3}

# The scientific stack a PyTorch GPU image usually holds, with their own dependencies (lower case).
BASE="numpy scipy scikit-image scikit-learn matplotlib pillow h5py pyyaml safetensors huggingface-hub hf-xet tqdm
einops torchmetrics lightning-utilities requests urllib3 certifi idna charset-normalizer jinja2 markupsafe sympy mpmath
networkx packaging pyparsing python-dateutil cycler kiwisolver contourpy fonttools filelock fsspec typing-extensions
tifffile imageio lazy-loader joblib threadpoolctl narwhals pytest iniconfig pluggy pygments anyio h11 click cloudpickle
tzdata truststore httpx2 httpcore2 attrs sortedcontainers"
# Development tools that the GPU check does not run (lint; the browser tests' driver and its dependencies).
NEVER="ruff selenium trio trio-websocket outcome wsproto websocket-client pysocks"

normalise() { tr '[:upper:]_.' '[:lower:]--'; }
if [ -n "$have" ]; then
    [ -f "$have" ] || { echo "gpu_wheels.sh: --have $have: no such file" >&2; exit 2; }
    present=$(sed -E 's/[=<>@ ;].*//' "$have" | normalise)
else
    present=$(echo "$BASE" | tr ' ' '\n' | normalise)
fi

wanted=()
while IFS= read -r line; do
    [ -z "$line" ] && continue
    name=$(echo "${line%%==*}" | normalise)
    case "$name" in torch|torchvision|triton|nvidia-*|cuda-*) continue ;; esac
    # here-strings, not pipes: under pipefail, grep -q leaving early would fail the pipe's writer (SIGPIPE)
    if grep -qx -- "$name" <<< "${NEVER// /$'\n'}"; then continue; fi
    if [ "$all" -eq 0 ]; then
        if [ "$name" = deepinv ]; then  # pinned exactly in pyproject.toml: sei is written against its 0.5 interfaces
            [ -n "$have" ] && grep -qix -- "$line" "$have" && continue
        elif grep -qx -- "$name" <<< "$present"; then
            continue
        fi
    fi
    wanted+=("$line")
done < "$root/requirements.lock"

if [ ${#wanted[@]} -eq 0 ]; then
    echo "gpu_wheels.sh: the target already has every dependency; nothing to download"
    exit 0
fi
mkdir -p "$dest"
platforms=()
for tag in manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
echo "downloading ${#wanted[@]} wheels for Python $python_version into $dest: ${wanted[*]}"
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$python_version" --implementation cp \
    "${platforms[@]}" -d "$dest" "${wanted[@]}"
size_kib=$(du -sk "$dest" | cut -f1)
size_mib=$(( (size_kib + 1023) / 1024 ))
echo "gpu_wheels.sh: $(ls "$dest"/*.whl | wc -l) wheels, ${size_mib} MiB in $dest"
if [ "$size_mib" -gt "$limit_mib" ]; then
    echo "gpu_wheels.sh: ${size_mib} MiB is over the ${limit_mib} MiB limit; pass --have with the target's pip freeze" >&2
    exit 1
fi
