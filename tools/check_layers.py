"""The import contract: each layer of the package imports only from itself and layers below.

    base (files, image_io, captions, tf_import, minilm_fetch, storage, config) <- model <- coding
        <- checkpoints <- evaluation <- train <- cli

Training may call the evaluator (per-epoch selection); evaluation never imports training;
the model knows nothing of bitstreams. Run by `make check`; exits 1 naming each import that
points up, with its file and line.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "tgic_jax"
LAYERS = ("base", "model", "coding", "checkpoints", "evaluation", "train", "cli")
BASE_MODULES = {
    "__init__",
    "files",
    "image_io",
    "captions",
    "tf_import",
    "minilm_fetch",
    "storage",
    "config",
}


def layer_of(module: str) -> str:
    """The layer of a dotted module name inside the package (`tgic_jax.coding.codec` -> coding)."""
    parts = module.split(".")[1:]
    if not parts or parts[0] in BASE_MODULES:
        return "base"
    if parts[0] not in LAYERS:
        raise ValueError(f"{module}: in no layer (add it to tools/check_layers.py)")
    return parts[0]


def imported_modules(path: Path, module: str):
    """(line, dotted name) of every package module that `path` imports, nested imports too."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                base = ".".join(module.split(".")[: -node.level] + ([base] if base else []))
            # `from tgic_jax import image_io` names a module; `from x.y import f` names x.y
            names = [f"{base}.{a.name}" if base == PACKAGE else base for a in node.names]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                yield node.lineno, name


def violations(root: Path) -> list[str]:
    """'file:line: layer -> layer (module)' for every import that points up."""
    out = []
    for path in sorted(root.rglob("*.py")):
        module = ".".join((PACKAGE, *path.relative_to(root).with_suffix("").parts))
        module = module.removesuffix(".__init__")
        src = LAYERS.index(layer_of(module))
        for line, name in imported_modules(path, module):
            dst = LAYERS.index(layer_of(name))
            if dst > src:
                rel = path.relative_to(root.parent)
                out.append(f"{rel}:{line}: {LAYERS[src]} imports {name} ({LAYERS[dst]}, above it)")
    return out


def main(argv=None) -> int:
    """Checks the package next to this script (or the folder given); 1 on any violation."""
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path(__file__).resolve().parents[1] / PACKAGE
    try:
        found = violations(root)
    except ValueError as err:  # a new top-level module or package: it must be placed
        print(f"check_layers: {err}")
        return 1
    for line in found:
        print(line)
    order = " <- ".join(LAYERS)
    print(f"import layers ({order}): " + (f"{len(found)} upward imports" if found else "ok"))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
