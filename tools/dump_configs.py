"""Writes every shipped config, each variant it accepts, as a flat key -> value JSON.

    python tools/dump_configs.py OUT.json

tests/fixtures/configs_before.json is this tool's output before the configs became overrides
of configs/base.py; tests/test_configs.py compares today's configs with it, so a change of
a value a run reads shows up as a failing test.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Every (file, argument) the configs accept: taco.py's confirmed rate point, one unconfirmed,
# its runlocal variant; small.py and its tiny variant.
VARIANTS = (
    ("taco.py", None),
    ("taco.py", "lmbda=0.0016"),
    ("taco.py", "runlocal"),
    ("taco.py", "lmbda=0.0004,runlocal"),
    ("small.py", None),
    ("small.py", "tiny"),
)


def load(name: str, arg: str | None):
    """configs/<name>'s get_config(arg)."""
    spec = importlib.util.spec_from_file_location(f"_config_{name[:-3]}", ROOT / "configs" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def flatten(tree, prefix="") -> dict:
    """{'optim.learning_rate': 0.001, ...} of a ConfigDict (tuples as lists, as JSON has them)."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if hasattr(value, "items"):
            out.update(flatten(value, name + "."))
        else:
            value = list(value) if isinstance(value, tuple) else value
            if isinstance(value, str) and value.startswith(str(ROOT)):  # checkout-independent
                value = "<repo>" + value[len(str(ROOT)) :]
            out[name] = value
    return out


def dump() -> dict:
    """{'small.py:tiny': {flat config}, ...} of every variant."""
    return {f"{name}:{arg or ''}": flatten(load(name, arg)) for name, arg in VARIANTS}


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(json.dumps(dump(), indent=1, sort_keys=True) + "\n")
