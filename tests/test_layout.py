"""The package's shape: modules small enough to read, and data flowing one way (no import cycle)."""

import ast
from pathlib import Path

import steer_away

PACKAGE = Path(steer_away.__file__).parent
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported(path: Path, known: set[str]) -> set[str]:
    """Our modules that `path` imports anywhere in it (module level, in functions, under TYPE_CHECKING)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against this module's package
                here = module_name(path).split(".")
                package = here if path.name == "__init__.py" else here[:-1]
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                name = f"{base}.{alias.name}"
                if name in known:
                    out.add(name)  # `from package import module`
                elif base in known:
                    out.add(base)
    return out - {"steer_away"}  # the top-level package only re-exports the library's entry points


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_module_is_at_most_400_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_import_cycle_among_our_modules():
    found = modules()
    graph = {name: imported(path, set(found)) - {name} for name, path in found.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_import_reader_sees_function_level_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from steer_away.decoding import loop\n    from steer_away.chat import encode\n")
    known = {"steer_away.decoding", "steer_away.decoding.loop", "steer_away.chat"}
    assert imported(source, known) == {"steer_away.decoding.loop", "steer_away.chat"}


# The floors, lowest first: a module may import its own unit or a unit on a lower floor, never one
# above (docs/architecture.md draws the same picture). A unit is a top-level module or package, or
# one of steering's three packages and its registry.
FLOORS: list[set[str]] = [
    {"errors"},
    {"paths", "resources", "console"},
    {"files"},
    {"internals"},
    {"models"},
    {"chat", "random_model"},
    {"data"},
    {"scoring"},
    {"profiles"},
    {"steering.vectors"},
    {"steering.framework"},
    {"steering.methods"},
    {"steering.registry"},
    {"decoding"},
    {"generation"},
    {"evaluation"},
    {"lmeval", "server"},
    {"cli"},
]


def unit_of(module: str) -> str:
    parts = module.split(".")[1:]
    if parts[:1] == ["steering"] and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0] if parts else "steer_away"


def floor_of(unit: str) -> int:
    found = [i for i, floor in enumerate(FLOORS) if unit in floor]
    assert found, f"unit {unit!r} is on no floor: add it to FLOORS (and to docs/architecture.md's picture)"
    return found[0]


def imports_pointing_up(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module, targets in sorted(graph.items()):
        here = unit_of(module)
        if here == "steer_away":  # the package itself: the flat public API re-exports from every floor
            continue
        for target in sorted(targets):
            there = unit_of(target)
            if there != here and floor_of(there) >= floor_of(here):
                out.append(f"{module} ({here}, floor {floor_of(here)}) imports {target} ({there}, floor {floor_of(there)})")
    return out


def test_every_import_points_down_the_floors():
    found = modules()
    graph = {name: imported(path, set(found)) - {name} for name, path in found.items()}
    assert imports_pointing_up(graph) == []


def test_the_floor_check_finds_an_import_pointing_up():
    graph = {"steer_away.data.prism": {"steer_away.scoring.base"},
             "steer_away.steering.vectors.bank": {"steer_away.steering.methods.activation"},
             "steer_away.cli.sweep": {"steer_away.evaluation.store"}}
    assert imports_pointing_up(graph) == [
        "steer_away.data.prism (data, floor 6) imports steer_away.scoring.base (scoring, floor 7)",
        "steer_away.steering.vectors.bank (steering.vectors, floor 9) imports steer_away.steering.methods.activation "
        "(steering.methods, floor 11)"]


MAX_SERVER_FUNCTION_LINES = 60  # a route, a check or a worker step each fits on a screen


def long_functions(path: Path, limit: int) -> list[str]:
    return [f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and (node.end_lineno or node.lineno) - node.lineno + 1 > limit]


def test_no_server_function_is_over_60_lines():
    found = [f for path in (PACKAGE / "server").rglob("*.py") for f in long_functions(path, MAX_SERVER_FUNCTION_LINES)]
    assert found == []


def test_the_function_length_check_finds_a_long_function(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def short():\n    return 1\n\n\ndef long():\n" + "    x = 1\n" * 61)
    assert long_functions(source, MAX_SERVER_FUNCTION_LINES) == ["m.py:long (62 lines)"]
