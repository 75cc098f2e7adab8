"""The package layout holds: imports point one way (command line → workflows → project → domains → run/io),
no import cycle, argparse only at the command line, modules of a readable size, and every workflow that
a project can name has both a reader and a headless run."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hpc_ilastik"

# Lowest first. A module may import its own subpackage and anything on a lower level, nothing else.
LEVELS = [
    {"hpc_ilastik", "errors", "libm", "synthetic"},
    {"io", "run"},
    {"forest"},
    {"pixel"},
    {"objects", "density"},
    {"graphs", "tracking"},
    {"project"},
    {"workflows"},
    {"train"},
    {"demo"},
    {"cli"},
    {"__main__"},
]
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    """Dotted name → file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every hpc_ilastik module a file imports, at the top or inside a function (annotations aside:
    `if TYPE_CHECKING:` blocks are never run)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {name for name in names if name in MODULES}


def _unit(module: str) -> str:
    """The part of the layout a module belongs to: its subpackage, or itself at the top."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _level(module: str) -> int:
    return next(i for i, units in enumerate(LEVELS) if _unit(module) in units)


def test_every_module_has_a_place_in_the_layers():
    unplaced = [module for module in MODULES if not any(_unit(module) in units for units in LEVELS)]
    assert not unplaced
    assert {"hpc_ilastik.io.inputs", "hpc_ilastik.run.distributed", "hpc_ilastik.pixel.features",
            "hpc_ilastik.workflows.pixel_classification"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    upward = [name for name in _imports(MODULES[module])
              if _unit(name) != _unit(module) and _level(name) >= _level(module)]
    assert not upward, f"{module} imports {upward}, which are not below it"


def test_no_import_cycle():
    graph = {module: _imports(path) - {module} for module, path in MODULES.items()}
    # a package's __init__ is imported with each of its modules: count it as a plain module all the same
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for name in sorted(graph[module]):
            if state.get(name) == 1:
                raise AssertionError("import cycle: " + " → ".join(trail[trail.index(name):] + [name]))
            if name not in state:
                visit(name, trail + [name])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_only_the_command_line_uses_argparse():
    users = [module for module, path in MODULES.items()
             if "argparse" in {a.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Import)
                               for a in n.names}]
    assert users == ["hpc_ilastik.cli"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_readable(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines"


def test_every_workflow_read_has_a_run():
    import importlib

    from hpc_ilastik.project.names import READERS
    from hpc_ilastik.workflows.headless import MODULES, workflow

    assert set(READERS) == set(MODULES)
    for name in MODULES:  # each module runs the workflow of that name, each reader exists where it is named
        assert workflow(name).name == name and callable(workflow(name).run)
        module, reader = READERS[name]
        assert callable(getattr(importlib.import_module(f"hpc_ilastik.project.{module}"), reader))


def test_a_pixel_run_imports_only_what_it_needs():
    """Start-up: a pixel classification run loads neither the other workflows' readers and kernels, nor asyncio
    (zarr's), nor PyYAML and scipy (numba imports them only for checks: run.process._import_numba_lightly)."""
    import subprocess
    import sys

    from tests.conftest import REPO, SHARED

    code = ("import sys; from hpc_ilastik.run.process import start_numba_lightly; start_numba_lightly(); "
            "from hpc_ilastik.workflows import headless; "
            "headless.workflow(headless.open_project(sys.argv[1]).workflow_name); "
            "print(' '.join(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code, str(SHARED / "fixtures" / "bench" / "pixel_class.ilp")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert {"numba", "hpc_ilastik.workflows.pixel_classification", "hpc_ilastik.project.pixel_classification"} <= loaded
    for unwanted in ("hpc_ilastik.project.counting", "hpc_ilastik.forest.regression", "hpc_ilastik.graphs.multicut",
                     "hpc_ilastik.project.tracking", "hpc_ilastik.objects.threshold", "asyncio", "yaml", "scipy"):
        assert unwanted not in loaded
