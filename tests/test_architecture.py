"""The layers of docs/architecture.md: every import of sei's inside src/sei points down (or stays in its
package)."""

from __future__ import annotations

import ast
from pathlib import Path

import sei

# docs/architecture.md, "Layers": a module may import from lower layers and from its own package only
LAYERS = (
    ("__init__", "errors"),  # sei/__init__.py holds only the version
    ("runtime", "problem"),  # the ground floor
    ("physics", "transforms", "imageio", "evaluation"),
    ("losses", "models", "data", "noise_estimation", "run_log", "figures"),
    ("weights",),
    ("training", "inference", "export"),
    ("restore",),
    ("app",),
    ("cli",),
    ("__main__",),
)
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}
PACKAGE = Path(sei.__file__).parent


def _imports(path: Path) -> set[str]:
    """The top-level sei modules that ``path`` imports (at module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sei":
            parts = node.module.split(".")
            names = [parts[1]] if len(parts) > 1 else [alias.name for alias in node.names]
            found |= {
                n if (PACKAGE / n).is_dir() or (PACKAGE / f"{n}.py").is_file() else "__init__" for n in names
            }
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("sei.")}
    return found


def test_every_module_has_a_layer_and_no_import_runs_upward():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.relative_to(PACKAGE).with_suffix("").parts[0]
        assert own in LAYER, f"{own} has no layer: add it to docs/architecture.md and LAYERS"
        for target in _imports(path) - {own}:
            if LAYER[target] >= LAYER[own]:
                upward.append(f"{path.relative_to(PACKAGE)} imports sei.{target}")
    assert not upward, upward
