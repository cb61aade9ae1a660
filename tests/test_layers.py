"""The layering rules of DESIGN.md, enforced twice: by importing in a fresh interpreter and by scanning
every import statement (including those inside functions).

CLI (arr_cli) → flows → tasks → arr_core.recipes → arr_core components → sql. Beyond the table: the
judge never imports rpo, rpo never imports the simulator, components never import the recipes (nor
read a whole stage config), and importing tasks or flows has no side effects.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """Every module an import statement in ``path`` names (absolute imports; relative are resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def _files(*parts: str) -> list[Path]:
    return sorted(p for p in (ROOT.joinpath(*parts)).rglob("*.py") if "__pycache__" not in p.parts)


def _violations(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for f in files:
        for mod in _imports(f):
            if any(mod == x or mod.startswith(x + ".") for x in forbidden):
                bad.append(f"{f.relative_to(ROOT)} imports {mod}")
    return sorted(set(bad))


RULES = [
    ("arr_core never imports orchestration or the CLI", _files("arr_core"),
     ("prefect", "mlflow", "flows", "tasks", "arr_cli")),
    ("tasks never import the CLI", _files("tasks"), ("arr_cli",)),
    ("flows never import the CLI", _files("flows"), ("arr_cli",)),
    ("the judge never imports rpo", _files("arr_core", "judge"), ("arr_core.rpo",)),
    ("rpo never imports the simulator", _files("arr_core", "rpo"), ("arr_core.sim",)),
    ("the reward outcomes sit at the bottom", [ROOT / "arr_core" / "rewards.py"],
     ("arr_core.rpo", "arr_core.judge", "arr_core.sim", "arr_core.recipes", "arr_core.vlm")),
    ("components never import the recipes",
     [f for f in _files("arr_core") if "recipes" not in f.parts], ("arr_core.recipes",)),
    # Stage configs stop at the recipes: below them, functions take plain values.
    ("components never read a stage config",
     [f for f in _files("arr_core") if "recipes" not in f.parts
      and f.relative_to(ROOT).as_posix() not in ("arr_core/rpo/config.py", "arr_core/rubrics/config.py")],
     ("arr_core.rpo.config", "arr_core.rubrics.config.InduceConfig", "flows.config")),
]


@pytest.mark.parametrize("name,files,forbidden", RULES, ids=[r[0] for r in RULES])
def test_import_rules_by_scanning(name: str, files: list[Path], forbidden: tuple[str, ...]) -> None:
    assert files, name
    assert _violations(files, forbidden) == [], name


def test_the_scanner_sees_imports_inside_functions(tmp_path: Path) -> None:
    f = ROOT / "arr_core" / "_layer_probe_tmp.py"
    f.write_text("def g():\n    from tasks import common\n    import prefect\n")
    try:
        assert _violations([f], ("tasks", "prefect")) == [
            "arr_core/_layer_probe_tmp.py imports prefect", "arr_core/_layer_probe_tmp.py imports tasks",
            "arr_core/_layer_probe_tmp.py imports tasks.common"]
    finally:
        f.unlink()


def _fresh(code: str, cwd: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ARR_HOME",)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_importing_every_arr_core_module_loads_no_orchestration_or_cli(tmp_path: Path) -> None:
    code = (
        "import importlib, json, pkgutil, sys, arr_core\n"
        "for m in pkgutil.walk_packages(arr_core.__path__, 'arr_core.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "print(json.dumps(sorted(n for n in sys.modules if n.split('.')[0] in "
        "('prefect', 'mlflow', 'flows', 'tasks', 'arr_cli'))[:10]))\n")
    assert _fresh(code, tmp_path) == []


def test_importing_tasks_and_flows_has_no_side_effects_and_never_loads_the_cli(tmp_path: Path) -> None:
    code = (
        "import importlib, json, os, pkgutil, sys\n"
        "before = dict(os.environ)\n"
        "import tasks, flows\n"
        "for pkg in (tasks, flows):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))\n"
        "print(json.dumps({'env': changed, 'cli': [n for n in sys.modules if n.startswith('arr_cli')]}))\n")
    out = _fresh(code, tmp_path)
    assert out == {"env": [], "cli": []}
    assert not (tmp_path / ".arr").exists(), "importing tasks/flows created the state folder"


def test_importing_the_tasks_prints_no_prefect_warning(tmp_path: Path) -> None:
    """Every run printed Prefect's "Both `cache_policy` and `cache_key_fn` are set" (issue 25)."""
    env = {k: v for k, v in os.environ.items() if k != "ARR_HOME"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    code = "import importlib, pkgutil, tasks, flows\n" + "".join(
        f"for m in pkgutil.walk_packages({p}.__path__, '{p}.'):\n    importlib.import_module(m.name)\n"
        for p in ("tasks", "flows"))
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "WARNING" not in r.stdout + r.stderr, (r.stdout + r.stderr)[-2000:]
