"""Our FFT blur (cached OTF) against deepinv's Blur(padding="circular") and BlurFFT.

Forward and adjoint, Gaussian_R2 (13x13), batch 8x3x48x48 and 1x3x1024x1024, median of
interleaved repeats. Writes benchmarks/results/blur_speed.json.

    python benchmarks/blur_speed.py [--threads 2] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import deepinv as dinv
import torch

from _timing import median_seconds
from sei.physics import make_physics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="1 by default: the machine is shared, and 2 threads on 2 busy cores time the scheduler",
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--kernel", default="Gaussian_R2")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ours = make_physics("deblurring", kernel=args.kernel, noise_level=0)
    kernel = ours.kernel.float()[None, None]
    records = []
    for shape in [(8, 3, 48, 48), (1, 3, 1024, 1024)]:
        x = torch.rand(shape)
        spatial = dinv.physics.Blur(filter=kernel, padding="circular")
        fft = dinv.physics.BlurFFT(img_size=shape[1:], filter=kernel)
        # sanity: all three compute the same circular blur (deepinv's BlurFFT centres even/odd alike)
        assert torch.allclose(ours.A(x), spatial.A(x), atol=1e-5)
        assert torch.allclose(ours.A(x), fft.A(x), atol=1e-5)
        for direction in ("A", "A_adjoint"):
            times = median_seconds(
                {
                    "sei": lambda d=direction, x=x: getattr(ours, d)(x),
                    "deepinv Blur(circular)": lambda d=direction, x=x, op=spatial: getattr(op, d)(x),
                    "deepinv BlurFFT": lambda d=direction, x=x, op=fft: getattr(op, d)(x),
                },
                repeats=args.repeats if shape[0] == 8 else max(5, args.repeats // 4),
            )
            for name, seconds in times.items():
                records.append(
                    {
                        "shape": list(shape),
                        "op": direction,
                        "impl": name,
                        "median_ms": 1e3 * seconds,
                        "speedup_of_sei": seconds / times["sei"],
                    }
                )
    print(f"{'shape':<18}{'op':<11}{'implementation':<26}{'median ms':>11}{'sei faster by':>15}")
    for r in records:
        print(
            f"{'x'.join(map(str, r['shape'])):<18}{r['op']:<11}{r['impl']:<26}"
            f"{r['median_ms']:>11.3f}{r['speedup_of_sei']:>14.2f}x"
        )
    out = Path(__file__).parent / "results" / "blur_speed.json"
    out.parent.mkdir(exist_ok=True)
    meta = {
        "threads": args.threads,
        "kernel": args.kernel,
        "torch": torch.__version__,
        "deepinv": dinv.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    out.write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
