"""arr_core never loads prefect or mlflow (DESIGN.md: logic is orchestration-free)."""

from __future__ import annotations

import subprocess
import sys


def test_importing_arr_core_loads_neither_prefect_nor_mlflow():
    code = (
        "import importlib, pkgutil, sys, arr_core\n"
        "skip = ('arr_core.cli', 'arr_core.__main__')\n"
        "for m in pkgutil.walk_packages(arr_core.__path__, 'arr_core.'):\n"
        "    if not m.name.startswith(skip):\n"
        "        importlib.import_module(m.name)\n"
        "import arr_core.cli\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('prefect', 'mlflow'))\n"
        "print(bad[:5])\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"arr_core imported orchestration modules: {r.stdout} {r.stderr[-2000:]}"
