"""List, inspect, fetch or export weights.

  list                      our shipped models (installed or not) and the paper's naming schemes
  info NAME_OR_PATH         the metadata of a weights file, folder, name or hub repo (task, kernel/factor,
                            noise, method, model)
  download NAME             fetch a paper weight file (or a hub repo's weights) into the Hugging Face cache,
                            for offline use
  export RUN_OR_FILE OUT    a hub-ready folder: weights.safetensors (physics in the metadata), config.json,
                            README.md (model card with the hub's YAML header), sample.png; --push uploads it

A folder (a run, or an exported one) and a hub model repo USER/REPO work wherever weights are taken
(`sei test --weights`, `sei reconstruct --weights`, `sei train --init`).

examples:
  sei weights list
  sei weights info sei-sr_x2-noise5
  sei weights download Deblurring_Gaussian_R2_Noise5_Proposed
  HF_HUB_OFFLINE=1 sei weights info Deblurring_Gaussian_R2_Noise5_Proposed   # from the cache only
  sei weights export runs/sei_g2 export/sei_g2                 # then: sei test --weights export/sei_g2
  sei weights export runs/sei_g2 export/sei_g2 --push me/sei-gaussian-r2   # needs HF_TOKEN or `hf auth login`
  sei test --weights me/sei-gaussian-r2                          # downloads once, cached
"""

from __future__ import annotations

import argparse
import json

from sei.errors import SeiUserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "info", "download", "export"))
    parser.add_argument(
        "name",
        nargs="?",
        help=(
            "a pretrained name, a weights file or folder, a hub repo USER/REPO; for export: a run folder or "
            "weights"
        ),
    )
    parser.add_argument("out_dir", nargs="?", help="export: the folder to write")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument(
        "--push",
        metavar="REPO_ID",
        default=None,
        help="export: upload the folder to this Hugging Face model repo (created if missing)",
    )
    parser.add_argument("--private", action="store_true", help="export --push: create the repo private")
    parser.add_argument(
        "--license",
        default=None,
        help="export: the licence in the model card (default bsd-3-clause, the code's)",
    )
    parser.add_argument("--overwrite", action="store_true", help="export: replace a non-empty OUT folder")
    parser.add_argument(
        "--no_figure", "--no-figure", action="store_true", help="export: skip the sample figure"
    )


def _refuse_export_flags(args: argparse.Namespace) -> None:
    given = [
        flag
        for flag, value in (
            ("OUT", args.out_dir),
            ("--push", args.push),
            ("--private", args.private),
            ("--license", args.license),
            ("--overwrite", args.overwrite),
            ("--no_figure", args.no_figure),
        )
        if value
    ]
    if given:
        raise SeiUserError(
            f"{', '.join(given)} belong to `sei weights export`, not `sei weights {args.action}`"
        )


def run(args: argparse.Namespace) -> int:
    from sei import weights

    if args.action != "export":
        _refuse_export_flags(args)
    if args.action == "list":
        rows = [
            {"name": cfg.name, "installed": cfg.path.is_file(), "description": cfg.description}
            for cfg in weights.PRETRAINED.values()
        ]
        if args.json:
            print(
                json.dumps(
                    {
                        "sei": rows,
                        "paper_repo": weights.HF_REPO,
                        "paper_examples": list(weights.PAPER_EXAMPLES),
                    },
                    indent=1,
                )
            )
            return 0
        print("sei models (shipped with the package):")
        for row in rows:
            print(
                f"  {row['name']:<26} {'installed' if row['installed'] else 'missing  '}  "
                f"{row['description']}"
            )
        print(f"\npaper models (downloaded from huggingface.co/{weights.HF_REPO}, cached):")
        print("  {Deblurring_<Gaussian|Box>_R<n>|SR_X<r>_PyTorch}_Noise<n>_<Method>[_<Dataset>...]")
        print("  Div2K-Train_Deblurring_<Gaussian|Box>_R<n>_Noise<n>_<Method>")
        for name in weights.PAPER_EXAMPLES:
            print(f"  e.g. {name}")
        print("\nshared models: any hub model repo USER/REPO made with `sei weights export --push` (cached)")
        return 0
    if not args.name:
        raise SeiUserError(f"`sei weights {args.action}` needs a NAME (see `sei weights list`)")
    if args.action == "export":
        return _export(args)
    if args.action == "download":
        if weights.parse_paper_name(args.name) is None and not weights._HUB_REPO.match(args.name):
            raise SeiUserError(
                f"{args.name!r} is not a paper weight name, nor a hub repo USER/REPO; `sei weights list` "
                "shows the naming schemes"
            )
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


def _export(args: argparse.Namespace) -> int:
    import re
    from pathlib import Path

    from sei.export import DEFAULT_LICENSE, export_model, push_folder

    if not args.out_dir:
        raise SeiUserError("`sei weights export` needs RUN_OR_FILE and OUT (the folder to write)")
    if args.push is not None and not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", args.push):
        raise SeiUserError(f"--push takes a hub repo id USER/REPO, got {args.push!r}")
    if args.private and args.push is None:
        raise SeiUserError("--private applies to --push REPO_ID")
    folder = export_model(
        args.name,
        Path(args.out_dir),
        repo_id=args.push,
        overwrite=args.overwrite,
        license_id=args.license or DEFAULT_LICENSE,
        figure=not args.no_figure,
    )
    print(f"exported {args.name} -> {folder} ({', '.join(sorted(p.name for p in folder.iterdir()))})")
    if args.push is not None:
        url = push_folder(folder, args.push, private=args.private)
        print(f"pushed to {args.push}: {url}")
    return 0
