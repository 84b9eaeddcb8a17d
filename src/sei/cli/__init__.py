"""The ``sei`` command. Subcommands live in their own modules and are imported only when used,
so ``sei --help`` stays fast.

Exit codes: 0 success, 1 runtime failure, 2 bad usage (a :class:`~sei.errors.SeiUserError`,
printed as one line; set ``SEI_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from sei.errors import SeiUserError

# name -> (module, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("sei.cli.demo", "the main job on the bundled images and shipped models (no download)"),
    "degrade": ("sei.cli.degrade", "blur or downsample images and add seeded noise (make measurements)"),
    "train": ("sei.cli.train", "train a network (proposed/SEI, sup, css, ei-shift, ei-rotate, sure)"),
    "test": ("sei.cli.test", "evaluate a model or a training-free method: PSNR and SSIM"),
    "restore": (
        "sei.cli.restore",
        "restore your own degraded images: fine-tune on them within a time budget, then reconstruct",
    ),
    "reconstruct": ("sei.cli.reconstruct", "deblur or upsample your own images with trained weights"),
    "app": (
        "sei.cli.app",
        "a local web page: upload images, restore them, compare and download (no command line)",
    ),
    "weights": ("sei.cli.weights", "list, inspect or fetch pretrained weights"),
    "data": ("sei.cli.data", "download and check datasets"),
}

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
STARTED = (
    time.perf_counter()
)  # when the command began (this module loads first): a --time_limit counts from here


def _overview() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: sei COMMAND [options]   (sei COMMAND --help for each)", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Exit codes: 0 success, 1 runtime failure, 2 bad usage. SEI_DEBUG=1 shows tracebacks."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    global STARTED
    if (
        argv is not None
    ):  # called from Python: the budget starts now (as a process, it started with the interpreter)
        STARTED = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_overview())
        return EXIT_OK if argv else EXIT_USAGE
    if argv[0] in ("-V", "--version"):
        from sei import __version__

        print(f"sei {__version__}")
        return EXIT_OK
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"sei: error: unknown command {name!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return EXIT_USAGE
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(
        prog=f"sei {name}",
        description=module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    try:
        args = parser.parse_args(rest)
    except SystemExit as exit_:  # argparse already printed its one-line message
        return int(exit_.code or 0)
    if getattr(args, "quiet", False):  # every progress bar of the command stays silent
        from sei.runtime import set_quiet

        set_quiet(True)
    try:
        return int(module.run(args) or EXIT_OK)
    except SeiUserError as error:
        if os.environ.get("SEI_DEBUG"):
            raise
        print(f"sei {name}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"sei {name}: interrupted", file=sys.stderr)
        return 130
