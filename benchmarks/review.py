"""The reviewer's sections of docs/results.md, from the ``review`` grid of ``benchmarks/reproduce.py``.

Seeds and paired differences, supervised training to convergence, equal-step and equal-time comparisons
(training seconds = steps x the method's median step cost from ``benchmarks/step_cost.py``, measured side
by side, because the runs' own wall times depend on the machine's load), the capacity question on two
networks, the harder blurs and the scale transform's ablation. ``benchmarks/report.py`` calls
:func:`sections`.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEP_COST = HERE / "results" / "step_cost.json"
FIGURES = HERE.parent / "docs" / "figures"
NAMES = {
    "sup": "supervised",
    "proposed": "SEI (proposed)",
    "css": "CSS",
    "ei-shift": "EI-shift",
    "ei-rotate": "EI-rotate",
}
KEY_METHODS = ("sup", "proposed", "css", "ei-shift", "ei-rotate")
PROBLEM_NAMES = {
    "gaussian_r2": "Gaussian_R2",
    "gaussian_r3": "Gaussian_R3",
    "box_r3": "Box_R3",
    "sr_x2": "SR x2",
}
# two-sided 95% quantiles of Student's t: a paired difference over n seeds is "real" when its 95%
# confidence interval, mean +- t * sd / sqrt(n), excludes zero
T95 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776}


def label(record: dict) -> str:
    return (record["kernel"] or f"SR_x{record['sr_factor']}").lower()


def step_costs() -> dict[tuple[str, str, str], float]:
    """Median seconds per optimizer step by (problem, network, method), or {} before step_cost.py ran."""
    if not STEP_COST.exists():
        return {}
    rows = json.loads(STEP_COST.read_text())["rows"]
    return {(r["problem"], r["network"], r["method"]): r["median_ms"] / 1000 for r in rows}


def interpolate(curve: list[tuple[float, float]], at: float) -> float | None:
    """The curve's value at ``at`` (linear between points), None outside its range."""
    for (x0, y0), (x1, y1) in zip(curve, curve[1:], strict=False):
        if x0 <= at <= x1:
            return y0 + (y1 - y0) * (at - x0) / (x1 - x0) if x1 > x0 else y1
    return None


def paired(sei: dict[int, float], other: dict[int, float]) -> tuple[float, float, int, bool] | None:
    """SEI minus the other method over the seeds both have: (mean, sd, n, real at 95%)."""
    seeds = sorted(set(sei) & set(other))
    if len(seeds) < 2:
        return None
    differences = [sei[s] - other[s] for s in seeds]
    mean, sd = statistics.mean(differences), statistics.stdev(differences)
    half_width = T95.get(len(seeds), 2.0) * sd / math.sqrt(len(seeds))
    return mean, sd, len(seeds), abs(mean) > half_width


FREE = {
    "id": "blurry input",
    "up": "bicubic upsampling",
    "wiener": "Wiener",
    "bm3d": "BM3D",
    "pnp": "PnP-HQS (FFDNet)",
}


def seeds_table(review: list[dict], converge: dict[str, dict], costs: dict, free: list[dict]) -> list[str]:
    """Per method and problem: mean +- sd over seeds at equal steps, the paired difference to SEI, PSNR at
    SEI's training time, and supervised at convergence."""
    psnr: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    curves: dict[tuple[str, str], list[list[dict]]] = defaultdict(list)
    steps = {}
    for r in review:
        if r["study"] == "seeds":
            psnr[(label(r), r["method"])][r["seed"]] = r["psnr_mean"]
            curves[(label(r), r["method"])].append(r["curve"])
            steps[label(r)] = r["steps"]
    problems = [p for p in ("gaussian_r2", "sr_x2") if any(k[0] == p for k in psnr)]
    if not problems:
        return []
    lines = [
        "## The reviewer's table: seeds, paired differences, equal time, converged supervised",
        "",
        "Each cell of the first block is the mean PSNR (dB) over seeds 0, 1, 2 (the seed sets the network's "
        "initialisation, the patch order, the SURE probes and the transforms) +- the standard deviation "
        "across "
        "seeds; **SEI - method** is the paired difference (same seed) with its spread, marked *real* when "
        "its "
        "95% confidence interval (Student's t, n - 1 degrees of freedom) excludes zero. **Equal time** is "
        "each "
        "method's PSNR (seed mean of its validation curve) after the training seconds SEI needs for its "
        "steps, with seconds = steps x the method's median step cost measured side by side "
        "(`benchmarks/step_cost.py`, one core); a cheaper method gets more steps in that time. "
        "The supervised row *at convergence* is one run of 6000 steps validated every 500.",
        "",
    ]
    for problem in problems:
        budget = steps[problem]
        sei_seconds = budget * costs.get((problem, "unet-small", "proposed"), float("nan"))
        lines += [
            f"**{PROBLEM_NAMES[problem]}**, unet-small, {budget} steps (equal time: {sei_seconds:.0f} s of "
            "single-core training, SEI's cost of its steps)",
            "",
            "| method | PSNR, equal steps (mean +- sd) | seeds | SEI - method (paired) | equal time |",
            "|---|---|---|---|---|",
        ]
        for method in KEY_METHODS:
            values = psnr.get((problem, method))
            if not values:
                continue
            mean = statistics.mean(values.values())
            sd = statistics.stdev(values.values()) if len(values) > 1 else float("nan")
            difference = "" if method == "proposed" else "n/a"
            test = paired(psnr.get((problem, "proposed"), {}), values) if method != "proposed" else None
            if test:
                d_mean, d_sd, n, real = test
                difference = f"{d_mean:+.2f} +- {d_sd:.2f} ({'real' if real else 'not significant'})"
            cost = costs.get((problem, "unet-small", method))
            timed = ""
            if cost and math.isfinite(sei_seconds):
                # the seed-mean validation curve against seconds; supervised's long run reaches further
                runs = curves[(problem, method)]
                points = defaultdict(list)
                for curve in runs:
                    for point in curve:
                        points[point["step"]].append(point["val_psnr"])
                curve = [(step * cost, statistics.mean(v)) for step, v in sorted(points.items())]
                value = interpolate(curve, sei_seconds)
                if value is None and method == "sup" and problem in converge:
                    long = [(p["step"] * cost, p["val_psnr"]) for p in converge[problem]["curve"]]
                    value = interpolate(long, sei_seconds)
                steps_then = sei_seconds / cost
                if value is not None:
                    timed = f"{value:.2f} ({steps_then:.0f} steps)"
                elif curve and sei_seconds > curve[-1][0]:  # its run ended before SEI's time was up
                    timed = f">= {curve[-1][1]:.2f} (its {budget} steps take {curve[-1][0]:.0f} s)"
            seeds = ", ".join(f"{values[s]:.2f}" for s in sorted(values))
            lines.append(f"| {NAMES[method]} | {mean:.2f} +- {sd:.2f} | {seeds} | {difference} | {timed} |")
        if problem in converge:
            run = converge[problem]
            best = max(run["curve"], key=lambda p: p["val_psnr"])
            plateau = first_within(run["curve"], best["val_psnr"], 0.05)
            lines.append(
                f"| supervised at convergence | {run['psnr_mean']:.2f} after {run['steps']} steps | | "
                "SEI - converged supervised: "
                f"{statistics.mean(psnr[(problem, 'proposed')].values()) - run['psnr_mean']:+.2f} | "
                f"best validation {best['val_psnr']:.2f} at step {best['step']:.0f}; within 0.05 dB of it "
                f"from step {plateau:.0f} |"
            )
        sei_mean = (
            statistics.mean(psnr[(problem, "proposed")].values()) if psnr.get((problem, "proposed")) else None
        )
        for kind, name in FREE.items():  # the same test measurements, no training (the paper's grid)
            record = next((r for r in free if r["model_kind"] == kind and label(r) == problem), None)
            if record and sei_mean is not None:
                lines.append(
                    f"| {name}, training-free | {record['psnr_mean']:.2f} | | "
                    f"SEI - {name}: {sei_mean - record['psnr_mean']:+.2f} | |"
                )
        lines.append("")
    return lines


def first_within(curve: list[dict], best: float, tolerance: float) -> float:
    """The first step from which the validation PSNR stays within ``tolerance`` of its best."""
    for index, point in enumerate(curve):
        if all(p["val_psnr"] >= best - tolerance for p in curve[index:]):
            return point["step"]
    return curve[-1]["step"]


def study_tables(review: list[dict]) -> list[str]:
    """The capacity question (two networks) and the harder blurs (three blur levels): SEI's margin over
    EI-shift and EI-rotate in each, at the same budget and seed."""
    lines: list[str] = []
    cells: dict[tuple[str, str, int], dict[str, dict]] = defaultdict(dict)
    for r in review:
        if r["study"] in ("capacity", "harder") and r["seed"] == 0:  # other seeds serve the data question
            cells[(PROBLEM_NAMES[label(r)], r["model"], r["steps"])][r["method"]] = r
    if not cells:
        return lines
    order = sorted(cells, key=lambda c: (c[2], c[1], ("Gaussian_R2", "Gaussian_R3", "Box_R3").index(c[0])))
    lines += [
        "## The margin question: larger network, harder blurs",
        "",
        "Same seed (0), same budget per column, the current photo pool. `unet-base` is a 4.5 M-parameter "
        "residual U-Net (4 scales, 2 blocks a scale), chosen by `benchmarks/step_cost.py`: its SEI step "
        "costs 2.4 times unet-small's, where the 2.5 M-parameter candidates (more channels at full "
        "resolution) cost 3.3-3.5 times. PSNR / SSIM on the 10 test photographs.",
        "",
        "| problem, network | steps | SEI | EI-shift | EI-rotate | SEI - EI-shift | SEI - EI-rotate |",
        "|---|---|---|---|---|---|---|",
    ]
    for column in order:
        runs = cells[column]
        text = [
            f"{runs[m]['psnr_mean']:.2f} / {runs[m]['ssim_mean']:.3f}" if m in runs else ""
            for m in ("proposed", "ei-shift", "ei-rotate")
        ]
        margins = [
            f"{runs['proposed']['psnr_mean'] - runs[m]['psnr_mean']:+.2f}"
            if "proposed" in runs and m in runs
            else ""
            for m in ("ei-shift", "ei-rotate")
        ]
        problem, network, budget = column
        lines.append(f"| {problem}, {network} | {budget} | " + " | ".join(text + margins) + " |")
    lines.append("")
    ceilings = [r for r in review if r["study"] == "converge" and label(r) == "gaussian_r2"]
    if ceilings:
        lines += [
            "Each network's ceiling on this pool, supervised training to convergence (the same "
            "photographs with their ground truth, which SEI never sees): "
            + "; ".join(
                f"{r['model']} {r['psnr_mean']:.2f} dB after {r['steps']} steps"
                for r in sorted(ceilings, key=lambda r: r["model"])
            )
            + ".",
            "",
        ]
    return lines + margin_against_budget(cells)


def margin_against_budget(cells: dict[tuple[str, str, int], dict[str, dict]]) -> list[str]:
    """SEI's margin over EI-shift and EI-rotate along the validation curves of the longest runs of each
    network (validated every 500 steps): does the margin shrink as the budget grows, on either network?"""
    longest: dict[tuple[str, str], dict[str, dict]] = {}
    for (problem, network, steps), runs in sorted(cells.items(), key=lambda item: item[0][2]):
        if steps >= 4000 and "proposed" in runs and ("ei-shift" in runs or "ei-rotate" in runs):
            longest[(problem, network)] = runs
    if not longest:
        return []
    lines = [
        "SEI's margin against the budget, read off the validation curves of the longest runs (validation "
        "PSNR on the same 10 photographs, every 500 steps, seed 0): SEI's own validation PSNR and its "
        "margin over each EI variant that ran this long. The learning rate decays over the second half of "
        "each run, so a mid-run point is not the end of a shorter run.",
        "",
    ]
    for (problem, network), runs in longest.items():
        curves = {m: {p["step"]: p["val_psnr"] for p in runs[m]["curve"]} for m in runs}
        others = [m for m in ("ei-shift", "ei-rotate") if m in curves]
        steps = sorted(set(curves["proposed"]).intersection(*(curves[m] for m in others)))
        lines += [
            f"| {problem}, {network} | " + " | ".join(f"{s:.0f}" for s in steps) + " |",
            "|---|" + "---|" * len(steps),
            "| SEI | " + " | ".join(f"{curves['proposed'][s]:.2f}" for s in steps) + " |",
        ]
        for other in others:
            lines.append(
                f"| SEI - {NAMES[other]} | "
                + " | ".join(f"{curves['proposed'][s] - curves[other][s]:+.2f}" for s in steps)
                + " |"
            )
        lines.append("")
    return lines


def data_table(review: list[dict]) -> list[str]:
    """Is the pool the limit? SEI on half the photographs against the whole pool, same seeds and budget."""
    half = {r["seed"]: r for r in review if r["study"] == "data"}
    if not half:
        return []
    steps = next(iter(half.values()))["steps"]
    whole = {
        r["seed"]: r
        for r in review
        if r["study"] == "capacity"
        and r["model"] == "unet-small"
        and r["method"] == "proposed"
        and r["steps"] == steps
    }
    seeds = sorted(set(half) & set(whole))
    if not seeds:
        return []
    difference = paired({s: whole[s]["psnr_mean"] for s in seeds}, {s: half[s]["psnr_mean"] for s in seeds})
    lines = [
        f"## Is the pool the limit? (Gaussian_R2, SEI, unet-small, {steps} steps)",
        "",
        "Half the pool: every other photograph with all its tiles (`benchmarks/work/pool_half`), "
        f"pool fingerprint {half[seeds[0]]['pool']}; the whole pool: {whole[seeds[0]]['pool']} "
        "(tiles, manifest "
        "and attribution).",
        "",
        "| training photographs | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
        "|---|" + "---|" * (len(seeds) + 1),
    ]
    for name, runs in (("whole pool", whole), ("half the pool", half)):
        values = [runs[s]["psnr_mean"] for s in seeds]
        lines.append(
            f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {statistics.mean(values):.2f} |"
        )
    lines.append("")
    if difference:
        mean, sd, n, real = difference
        verdict = "real" if real else "not significant"
        lines += [
            f"Whole minus half, paired over {n} seeds: {mean:+.2f} +- {sd:.2f} dB ({verdict} at 95%).",
            "",
        ]
    return lines


def ablation_table(review: list[dict]) -> list[str]:
    """The scale transform's settings, each against the paper's default with the same seed and budget."""
    runs = [r for r in review if r["study"] == "ablation"]
    default = next(
        (
            r
            for r in review
            if r["study"] == "seeds"
            and r["method"] == "proposed"
            and r["seed"] == 0
            and label(r) == "gaussian_r2"
        ),
        None,
    )
    if not runs or default is None:
        return []
    lines = [
        f"## The scale transform's own settings (Gaussian_R2, seed 0, {default['steps']} steps)",
        "",
        "The paper's transform: factors {0.75, 0.5} drawn uniformly, bicubic interpolation, no antialiasing. "
        "One setting changed at a time; the difference is paired (same seed). The seeds table gives the "
        "seed-to-seed spread to read it against.",
        "",
        "| setting | PSNR / SSIM | - default |",
        "|---|---|---|",
        f"| paper's default | {default['psnr_mean']:.2f} / {default['ssim_mean']:.3f} | |",
    ]
    for r in runs:
        setting = ", ".join(f"{k} = {v}" for k, v in sorted(r["config"].items()))
        lines.append(
            f"| {setting} | {r['psnr_mean']:.2f} / {r['ssim_mean']:.3f} | "
            f"{r['psnr_mean'] - default['psnr_mean']:+.2f} |"
        )
    lines.append("")
    return lines


def figure_curves(review: list[dict], converge: dict[str, dict], costs: dict) -> Path | None:
    """PSNR against steps and against training seconds of every key method (seed means), both problems."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = [
        p for p in ("gaussian_r2", "sr_x2") if any(r["study"] == "seeds" and label(r) == p for r in review)
    ]
    if not problems:
        return None
    figure, axes = plt.subplots(len(problems), 2, figsize=(11, 4 * len(problems)), squeeze=False)
    for row, problem in enumerate(problems):
        for method in KEY_METHODS:
            points = defaultdict(list)
            for r in review:
                if r["study"] == "seeds" and label(r) == problem and r["method"] == method:
                    for p in r["curve"]:
                        points[p["step"]].append(p["val_psnr"])
            if not points:
                continue
            steps = sorted(points)
            means = [statistics.mean(points[s]) for s in steps]
            cost = costs.get((problem, "unet-small", method))
            style = {"label": NAMES[method], "marker": "o", "markersize": 3}
            line = axes[row, 0].plot(steps, means, **style)[0]
            if cost:
                axes[row, 1].plot([s * cost for s in steps], means, color=line.get_color(), **style)
            if method == "sup" and problem in converge:
                long = converge[problem]["curve"]
                axes[row, 0].plot(
                    [p["step"] for p in long],
                    [p["val_psnr"] for p in long],
                    "--",
                    color=line.get_color(),
                    label="supervised, long run",
                )
                if cost:
                    axes[row, 1].plot(
                        [p["step"] * cost for p in long],
                        [p["val_psnr"] for p in long],
                        "--",
                        color=line.get_color(),
                    )
        axes[row, 0].set(
            xscale="log",
            xlabel="optimizer steps",
            ylabel="validation PSNR (dB)",
            title=f"{PROBLEM_NAMES[problem]}: equal steps",
        )
        axes[row, 1].set(
            xscale="log",
            xlabel="single-core training seconds (steps x median step cost)",
            title=f"{PROBLEM_NAMES[problem]}: equal time",
        )
        for axis in axes[row]:
            axis.grid(alpha=0.3)
        axes[row, 0].legend(fontsize=8)
    figure.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / "curves_review.png"
    figure.savefig(path, dpi=75)
    plt.close(figure)
    return path


def sections(records: list[dict]) -> list[str]:
    """Every reviewer section, from the records of the review grid (those with a ``study``)."""
    review = [r for r in records if r.get("study")]
    if not review:
        return []
    costs = step_costs()
    # the seeds table reads unet-small's converged run (the seeds' network); the study tables read all
    converge = {label(r): r for r in review if r["study"] == "converge" and r["model"] == "unet-small"}
    free = [r for r in records if not r.get("study") and not r["method"]]
    lines = seeds_table(review, converge, costs, free)
    if figure_curves(review, converge, costs):
        lines += ["![PSNR against steps and seconds](figures/curves_review.png)", ""]
    lines += study_tables(review)
    lines += data_table(review)
    lines += ablation_table(review)
    return lines
