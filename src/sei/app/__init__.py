"""``sei app``: a local web page for restoring one's own images without the command line.

The page (``static/``) uploads images, runs a shipped or trained model, a training-free method or
the time-budgeted training of ``sei restore`` as a background job (:mod:`sei.app.jobs`), shows the
progress, compares input and result, and offers the results (in the input's bit depth) and the
trained weights for download. The server (:mod:`sei.app.server`) is a small Starlette application
served by uvicorn on the loopback address; it needs the ``app`` extra (``pip install sei[app]``).
See docs/app.md.
"""

from __future__ import annotations

from sei.errors import SeiUserError


def require_app_packages() -> None:
    """A one-line error naming the extra when the web packages are missing."""
    missing = []
    for module in ("starlette", "uvicorn", "multipart"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise SeiUserError(
            f"sei app needs the web packages ({', '.join(missing)} missing): pip install 'sei[app]'"
        )
