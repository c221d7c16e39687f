"""clm/ is the Dagster-free domain library: it never imports dagster or the Dagster packages."""

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
FORBIDDEN = {"dagster", "dagster_webserver", "assets", "resources", "sensors", "jobs", "definitions"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_clm_never_imports_dagster():
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & FORBIDDEN) for p in (ROOT / "clm").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_heavy_libraries_are_not_imported_at_module_top_of_dagster_modules():
    for folder in ("assets", "resources", "sensors", "jobs"):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text())
            top = set()
            for node in tree.body:
                if isinstance(node, ast.Import):
                    top |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module:
                    top.add(node.module.split(".")[0])
            assert not top & {"torch", "lightgbm"}, path
