"""The package layout holds: no import cycle, arrows point down the pipeline, and the command
line starts without torch. Run alone with ``python -m pytest tests/test_layout.py``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import copycat

SRC = Path(copycat.__file__).parent

# Floors, bottom to top: a module may import from its own folder or from a lower floor only.
FLOORS: dict[str, float] = {
    "copycat": 0,  # errors, config, registry, devices, runs: the ground every stage stands on
    "data": 1,
    "train": 2,
    "oracles": 3,
    "pools": 3,
    "defences": 3.5,  # oracle wrappers: above the oracles, below steal and serve
    "steal": 4,
    "evaluate": 4,
    "targets": 5,
    "report": 5,
    "serve": 5,
    "pipeline": 6,
    "audit": 6.5,  # runs pipeline stages over an attack x defence matrix
    "cli": 7,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _room(module: str) -> str:
    """The folder (stage) a module lives in; top-level modules other than pipeline are ground."""
    parts = module.split(".")
    if len(parts) == 1:
        return "copycat"
    if len(parts) == 2 and parts[1] not in FLOORS:
        return "copycat"
    return parts[1]


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in _nodes(tree.body, deep=not top_level_only):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("copycat"):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("copycat"))
    return found


def _nodes(body: list[ast.stmt], *, deep: bool) -> list[ast.AST]:
    """Statements of ``body`` (and, if ``deep``, everything nested in them), leaving out
    ``if TYPE_CHECKING:`` blocks: they import nothing at run time."""
    out: list[ast.AST] = []
    for stmt in body:
        if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
            continue
        out.append(stmt)
        if deep:
            for child in ast.iter_child_nodes(stmt):
                if isinstance(child, ast.stmt):
                    out += _nodes([child], deep=True)
                else:
                    out += list(ast.walk(child))
    return out


def _graph(*, top_level_only: bool) -> dict[str, set[str]]:
    return {_module_name(p): _imports(p, top_level_only=top_level_only) for p in SRC.rglob("*.py")}


def test_no_import_cycle() -> None:
    graph = _graph(top_level_only=True)
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep] if dep in stack else [node, dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])


def test_arrows_point_down() -> None:
    wrong = []
    for mod, deps in _graph(top_level_only=False).items():
        room = _room(mod)
        for dep in deps:
            other = _room(dep)
            if other != room and FLOORS[other] >= FLOORS[room]:
                wrong.append(f"{mod} imports {dep} ({other} is not below {room})")
    assert not wrong, "\n".join(sorted(wrong))


def test_every_room_has_a_floor() -> None:
    rooms = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert rooms <= set(FLOORS), f"give these folders a floor in FLOORS: {rooms - set(FLOORS)}"


def test_import_and_help_do_not_load_torch() -> None:
    code = (
        "import sys, copycat\n"
        "from copycat.cli.main import app\n"
        "assert 'torch' not in sys.modules, 'torch imported at start-up'\n"
        "print(copycat.__version__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    # and the lazy public API still resolves
    assert copycat.parse_oracle_spec.__module__ == "copycat.oracles.registry"
    assert copycat.TopK.__name__ == "TopK"
