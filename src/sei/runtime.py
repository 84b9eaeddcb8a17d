"""Ground-floor runtime helpers, imported by every layer and importing nothing else of sei's.

Parsing of user-given quantities that are not about the imaging problem (durations), and progress bars.
"""

from __future__ import annotations

import re

from sei.errors import SeiUserError

_DURATION = re.compile(r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m(?:in)?)?(?:(?P<s>\d+(?:\.\d+)?)s?)?$")


def parse_duration(text: str | float) -> float:
    """A wall-clock budget in seconds from ``"90"``, ``"90s"``, ``"10m"``, ``"1h30m"``; zero or negative is an error.

    >>> parse_duration("10m"), parse_duration("1h30m"), parse_duration("45")
    (600.0, 5400.0, 45.0)
    """
    value = str(text).strip().lower()
    match = _DURATION.match(value)
    if not value or match is None or not any(match.groupdict().values()):
        raise SeiUserError(f"cannot read the time limit {text!r}: write e.g. 90s, 10m or 1h30m")
    seconds = 3600 * float(match["h"] or 0) + 60 * float(match["m"] or 0) + float(match["s"] or 0)
    if seconds <= 0:
        raise SeiUserError(f"the time limit must be positive, got {text!r}")
    return seconds


# --- progress bars -------------------------------------------------------------------------------

_quiet = False  # set by a command's --quiet: every bar of that process stays silent


def set_quiet(quiet: bool = True) -> None:
    """Silence (or allow) every progress bar of this process: the CLI calls it for ``--quiet``."""
    global _quiet
    _quiet = bool(quiet)


def progress_enabled() -> bool:
    """Whether bars are shown: not under ``--quiet``, and only when stderr is a terminal (a log file or a
    pipe gets no carriage-return clutter)."""
    import sys

    return not _quiet and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def progress_bar(iterable=None, *, desc: str, total: int | None = None, unit: str = "it", leave: bool = True, **options):
    """A tqdm bar on stderr with what is being done (``desc``), a rate and a time estimate; disabled
    (a plain pass-through) under ``--quiet`` or when stderr is not a terminal."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, dynamic_ncols=True, disable=not progress_enabled(), **options)
