"""House rule: analysis code never imports report code.

Reports are rendered from result objects by :mod:`brainmatch.reports`; the analysis
packages (everything under ``src/brainmatch`` except ``reports/``, the CLI, the web
service and the top-level package) must not import it, not even lazily inside a function.
The check parses every module with :mod:`ast`, so it sees imports wherever they are.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import brainmatch

PACKAGE = Path(brainmatch.__file__).parent
#: layers allowed to call report writers: the report base itself and the orchestrators
#: (the CLI, the web service, the package's lazy top-level entry points)
EXEMPT = {"reports", "cli", "web"}
EXEMPT_FILES = {"__init__.py", "__main__.py"}
FORBIDDEN = "brainmatch.reports"


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join([*base, node.module] if node.module else base)


def _is_forbidden(name: str) -> bool:
    return name == FORBIDDEN or name.startswith(FORBIDDEN + ".")


def report_imports(path: Path, root: Path = PACKAGE) -> list[str]:
    """``file:line: statement`` for every import of report code in ``path``."""
    module = _module_name(path, root)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node, module, is_package)
            names = [target] + [f"{target}.{a.name}" for a in node.names]
        if any(_is_forbidden(n) for n in names):
            bad.append(f"{path.relative_to(root.parent)}:{node.lineno}: {ast.unparse(node)}")
    return bad


def analysis_modules(root: Path = PACKAGE) -> list[Path]:
    """Every module of the analysis layer (the exempt layers left out)."""
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in EXEMPT or (len(rel.parts) == 1 and rel.name in EXEMPT_FILES):
            continue
        out.append(path)
    return out


def test_analysis_code_never_imports_report_code():
    modules = analysis_modules()
    assert len(modules) > 50  # the walk found the package
    assert not any(p.relative_to(PACKAGE).parts[0] == "reports" for p in modules)
    bad = [line for path in modules for line in report_imports(path)]
    assert not bad, "analysis code imports report code:\n" + "\n".join(bad)


def test_report_writers_live_in_reports():
    """No analysis package keeps a report writer of its own."""
    strays = [
        str(p.relative_to(PACKAGE))
        for p in analysis_modules()
        if p.stem in {"report", "cbma_report"} or p.stem.endswith("_report")
    ]
    assert not strays


@pytest.mark.parametrize(
    ("package_file", "source"),
    [
        ("change/bad.py", "from brainmatch.reports import render\n"),
        ("change/bad.py", "import brainmatch.reports.change as rc\n"),
        ("change/bad.py", "def save():\n    from brainmatch.reports.change import x\n"),
        ("change/bad.py", "class R:\n    def save(self):\n        import brainmatch.reports\n"),
        ("change/bad.py", "from brainmatch import reports\n"),
        ("change/bad.py", "def f():\n    from ..reports import change\n"),
        ("change/bad.py", "from ..reports.change import write_report\n"),
        ("change/__init__.py", "from ..reports import render\n"),
        ("bad.py", "from .reports import render\n"),
        ("bad.py", "from . import reports\n"),
    ],
)
def test_checker_finds_a_planted_violation(tmp_path, package_file, source):
    root = tmp_path / "brainmatch"
    path = root / package_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    (root / "reports").mkdir()
    (root / "reports" / "ok.py").write_text("from brainmatch.reports import render\n")
    assert path in analysis_modules(root)
    assert root / "reports" / "ok.py" not in analysis_modules(root)
    found = report_imports(path, root)
    assert len(found) == 1 and found[0].startswith(str(Path("brainmatch") / package_file) + ":")


@pytest.mark.parametrize(
    "source",
    [
        "from brainmatch.reporting import x\n",  # another name with the same prefix
        "from brainmatch import _io\nimport reports\n",  # a third-party 'reports'
        "from . import analysis\n",
        "from .report_utils import x\n",
    ],
)
def test_checker_passes_clean_modules(tmp_path, source):
    root = tmp_path / "brainmatch"
    path = root / "change" / "ok.py"
    path.parent.mkdir(parents=True)
    path.write_text(source)
    assert report_imports(path, root) == []
