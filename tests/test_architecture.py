"""No import reaches upward: each package of modnet_prune imports only the ones below it
(docs/architecture.md), function-level imports included."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "modnet_prune"
# Bottom first. A package may import itself and anything earlier in this list.
LAYERS = ("errors", "files", "memory", "checks", "graph", "model", "data", "prune", "metrics", "train",
          "deploy", "measure", "report", "pipeline", "cli")


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported top-level part of modnet_prune, line) for every import in `path`."""
    module = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = module[:-1] if path.name != "__init__.py" else module[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = (*base, *(node.module.split(".") if node.module else ()))
            else:
                target = tuple((node.module or "").split("."))
            if target[:1] == ("modnet_prune",):
                names = [a.name for a in node.names]
                part = target[1] if len(target) > 1 else (names[0] if names != ["__version__"]
                                                          else "errors")
                found.append((part, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name.split(".")[1], node.lineno) for a in node.names
                      if a.name.startswith("modnet_prune.")]
    return found


def test_layers_cover_every_package():
    parts = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert parts - {"__init__", "__main__"} == set(LAYERS)


def test_no_import_reaches_upward():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if own not in LAYERS:
            continue  # the package root and __main__ sit above everything
        for part, line in _imports(path):
            if part in LAYERS and LAYERS.index(part) > LAYERS.index(own):
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {part}")
    assert upward == []
