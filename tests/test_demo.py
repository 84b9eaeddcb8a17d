"""`sei demo`, the README's main job: every shipped model restores the bundled photographs better than the
measurement and than the training-free baseline it is printed beside."""

from __future__ import annotations

import re

from PIL import Image

from sei.cli import main
from sei.weights import PRETRAINED


def test_demo_every_shipped_model_beats_measurement_and_baseline(tmp_path, capsys):
    assert main(["demo", "--images", "2", "--out_dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    rows = {}
    for line in printed.splitlines():
        match = re.match(r"^(sei-\S+)\s.*?\s(\d+\.\d+)\s+\w+ (\d+\.\d+)\s+(\d+\.\d+)\s+([+-]\d+\.\d+)$", line)
        if match:
            name, measurement, baseline, sei, gain = match.groups()
            rows[name] = (float(measurement), float(baseline), float(sei), float(gain))
    shipped = {name for name, cfg in PRETRAINED.items() if cfg.path.exists()}
    assert shipped and set(rows) == shipped, printed
    for name, (measurement, baseline, sei, gain) in rows.items():
        assert sei > measurement + 0.5, (name, rows[name])
        assert sei > baseline, (name, rows[name])
        assert abs(gain - (sei - measurement)) < 0.011
        # one figure per model: 2 photographs, 4 panels each (measurement, baseline, SEI, ground truth)
        with Image.open(tmp_path / f"{name}.png") as figure:
            width, height = figure.size
        assert width > 1.5 * height, (name, figure.size)
