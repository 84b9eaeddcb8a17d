"""List, inspect or fetch pretrained weights.

  list                 our shipped models (installed or not) and the paper's naming schemes
  info NAME_OR_PATH    the metadata of a weights file or name (task, kernel/factor, noise, method, model)
  download NAME        fetch a paper weight file into the Hugging Face cache (for offline use later)

examples:
  sei weights list
  sei weights info sei-sr_x2-noise5
  sei weights download Deblurring_Gaussian_R2_Noise5_Proposed
  HF_HUB_OFFLINE=1 sei weights info Deblurring_Gaussian_R2_Noise5_Proposed   # from the cache only
"""

from __future__ import annotations

import argparse
import json

from sei.errors import SeiUserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "info", "download"))
    parser.add_argument("name", nargs="?", help="a pretrained name or a weights file (info, download)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def run(args: argparse.Namespace) -> int:
    from sei import weights

    if args.action == "list":
        rows = [{"name": cfg.name, "installed": cfg.path.is_file(), "description": cfg.description}
                for cfg in weights.PRETRAINED.values()]
        if args.json:
            print(json.dumps({"sei": rows, "paper_repo": weights.HF_REPO, "paper_examples": list(weights.PAPER_EXAMPLES)}, indent=1))
            return 0
        print("sei models (shipped with the package):")
        for row in rows:
            print(f"  {row['name']:<26} {'installed' if row['installed'] else 'missing  '}  {row['description']}")
        print(f"\npaper models (downloaded from huggingface.co/{weights.HF_REPO}, cached):")
        print("  {Deblurring_<Gaussian|Box>_R<n>|SR_X<r>_PyTorch}_Noise<n>_<Method>[_<Dataset>...]")
        print("  Div2K-Train_Deblurring_<Gaussian|Box>_R<n>_Noise<n>_<Method>")
        for name in weights.PAPER_EXAMPLES:
            print(f"  e.g. {name}")
        return 0
    if not args.name:
        raise SeiUserError(f"`sei weights {args.action}` needs a NAME (see `sei weights list`)")
    if args.action == "download":
        if weights.parse_paper_name(args.name) is None:
            raise SeiUserError(f"{args.name!r} is not a paper weight name; `sei weights list` shows the naming schemes")
        path, _ = weights.resolve_weights(args.name)
        print(path)
        return 0
    _, metadata = weights.load_weights(args.name)
    if args.json:
        print(json.dumps(metadata, indent=1, sort_keys=True))
    else:
        for key in sorted(metadata):
            print(f"{key:<12} {metadata[key]}")
    return 0
