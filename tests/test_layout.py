"""The package layout's rules, checked on the source (ast, no imports run):
- nothing imports a job folder (pipeline/objaverse, hoi, human) except cli.py, the tests, the benchmarks
  and the job folder itself, and job folders do not import each other;
- no import cycle between modules of trainer/, schemas/ or pipeline/ (lazy imports inside functions
  count too: a circle is a circle for a reader even when Python tolerates it);
- pipeline/ keeps at most four modules at its root (the rest lives in folders named for what they hold);
- the README stays short (≤ 15 KB) and names exactly the test command CI runs."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "schemas", "trainer")
JOBS = ("objaverse", "hoi", "human")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name a file imports (``from a.b import c`` gives a.b and a.b.c)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def package_files() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def graph() -> dict[str, set[str]]:
    files = package_files()
    return {name: {m for m in imported_modules(path) if m in files and m != name}
            for name, path in files.items()}


def job_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "pipeline" and parts[1] in JOBS else None


def test_nothing_but_the_entry_points_imports_a_job_folder():
    bad = [f"{src} imports {dst}" for src, deps in graph().items() for dst in deps
           if job_of(dst) and job_of(dst) != job_of(src)]
    assert not bad, "\n".join(bad)


def test_no_import_cycles_in_the_packages():
    g = graph()
    # modules that import a package import its __init__ first; only edges between files matter here
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(g[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    # an import of a package's own __init__ from its submodule is not a design circle
    cycles = [c for c in cycles if not all(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(c, c[1:], strict=False))]
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_pipeline_root_keeps_at_most_four_modules():
    loose = sorted(p.name for p in (ROOT / "pipeline").glob("*.py"))
    assert len(loose) <= 4, loose


def test_readme_is_short_and_names_the_ci_test_command():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 15_000, f"README is {len(readme.encode())} bytes"
    ci = (ROOT / ".ci" / "run")
    if not ci.exists():
        pytest.skip("no .ci/run in this checkout")
    test_line = ci.read_text().strip().splitlines()[-1]
    assert test_line in readme, f"the README does not give CI's test command {test_line!r}"


def test_the_cycle_check_sees_a_cycle(tmp_path, monkeypatch):
    """The cycle test must be able to fail: two files importing each other are found."""
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "a.py").write_text("from trainer import b\n")
    (tmp_path / "trainer" / "b.py").write_text("def f():\n    from trainer.a import x\n")
    for pkg in ("pipeline", "schemas"):
        (tmp_path / pkg).mkdir()
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    with pytest.raises(AssertionError, match="trainer.a -> trainer.b -> trainer.a"):
        test_no_import_cycles_in_the_packages()


def test_every_package_folder_is_a_regular_package():
    """setuptools' ``packages.find`` (pyproject) skips folders without ``__init__.py``: a wheel would
    silently lack them (an editable install hides that)."""
    missing = [str(d.relative_to(ROOT)) for pkg in PACKAGES for d in [ROOT / pkg, *(ROOT / pkg).rglob("*")]
               if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py")) and not (d / "__init__.py").exists()]
    assert not missing, missing
