"""The imaging problem's facts, written once: the tasks, the SR factors, the default kernel and noise,
the training methods and their aliases.

Ground floor (imports nothing of sei's but its errors): the physics, the networks, the losses, the
weights and the command line all read these names from here, and every message that lists the choices
is built from them. (What one training run works on, its operator and data, is
:mod:`sei.training.problem`.)
"""

from __future__ import annotations

from sei.errors import SeiUserError

# --- tasks ---------------------------------------------------------------------------------------

DEBLURRING = "deblurring"
SR = "sr"
TASKS = (DEBLURRING, SR)
DEFAULT_TASK = DEBLURRING
SR_FACTORS = (2, 3, 4, 8)  # the integer factors of bicubic super-resolution
DEFAULT_SR_FACTOR = 2
DEFAULT_KERNEL = "Gaussian_R2"  # the paper's main deblurring kernel (a Gaussian of std 2 pixels)

# --- noise ---------------------------------------------------------------------------------------

GAUSSIAN = "gaussian"
POISSON_GAUSSIAN = "poisson-gaussian"
NOISE_MODELS = (GAUSSIAN, POISSON_GAUSSIAN)
DEFAULT_NOISE_MODEL = GAUSSIAN
DEFAULT_NOISE_LEVEL = 5.0  # the paper's std in 8-bit units (sigma = 5/255)

# --- training methods ----------------------------------------------------------------------------

# Accepted method names (aliases included) -> canonical name; the paper's weight names use the aliases.
METHODS: dict[str, str] = {
    "proposed": "proposed",
    "sei": "proposed",
    "sup": "sup",
    "supervised": "sup",
    "css": "css",
    "ei-shift": "ei-shift",
    "ei-rotate": "ei-rotate",
    "sure": "sure",
}
DEFAULT_METHOD = "proposed"
GROUND_TRUTH_METHODS = ("sup",)  # canonical methods that need the sharp images
SURE_FREE_METHODS = ("sup", "css")  # canonical methods without a SURE term (UNSURE does not apply)


def choices(names: tuple | dict) -> str:
    """The choices of a fact as a message lists them: ``deblurring, sr``."""
    return ", ".join(map(str, names))


def check_task(task: str) -> str:
    """``task`` if it is one of :data:`TASKS`; a one-line error otherwise."""
    if task not in TASKS:
        raise SeiUserError(f"unknown task {task!r}: choose one of {choices(TASKS)}")
    return task


def check_sr_factor(sr_factor: int | float | None) -> int:
    """The SR factor (``None``: the default) as an int, if it is one of :data:`SR_FACTORS`.

    >>> check_sr_factor(None), check_sr_factor(4.0)
    (2, 4)
    """
    factor = DEFAULT_SR_FACTOR if sr_factor is None else sr_factor
    if factor != int(factor) or int(factor) not in SR_FACTORS:
        raise SeiUserError(f"unsupported sr factor {sr_factor}: choose one of {choices(SR_FACTORS)}")
    return int(factor)


def output_scale(task: str, sr_factor: int | None) -> int:
    """The factor between measurement and estimate sizes (1 for deblurring), after checking the pair.

    >>> output_scale("sr", 4), output_scale("deblurring", None)
    (4, 1)
    """
    if check_task(task) == DEBLURRING:
        if sr_factor not in (None, 1):
            raise SeiUserError(
                f"sr_factor={sr_factor} applies to the sr task only; deblurring keeps the size (its blur is "
                "--kernel)"
            )
        return 1
    return check_sr_factor(sr_factor)


def canonical_method(name: str) -> str:
    """The canonical name of a training method or alias (``sei`` -> ``proposed``); a one-line error
    otherwise."""
    if name not in METHODS:
        raise SeiUserError(f"unknown method {name!r}: choose one of {choices(METHODS)}")
    return METHODS[name]
