"""``scripts/gpu_check.sh``: valid bash; without a CUDA device it stops at once, says so and writes
nothing; its mechanics (install only the missing wheels, run the stages, write the JSON) on a faked
CUDA check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def test_script_is_valid_bash() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True).returncode == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the script would run the full check")
def test_without_cuda_it_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OUT": str(out)})
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no CUDA device is present" in r.stderr
    assert not out.exists()  # nothing written


def _wheel(folder: Path, dist: str, version: str) -> Path:
    """A minimal pure-Python wheel (one module, the dist-info files pip needs)."""
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    files = {f"{dist}/__init__.py": "X = 1\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the script would run the full check")
@pytest.mark.skipif(shutil.which("timeout") is None, reason="needs coreutils' timeout")
def test_mechanics_with_a_faked_cuda_check(tmp_path: Path) -> None:
    # sitecustomize makes torch report a CUDA device, so the script goes past its check; the stages
    # themselves then fail (there is no device), which exercises the failure path of the summary.
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(
        "import torch\ntorch.cuda.is_available = lambda: True\ntorch.cuda.device_count = lambda: 1\n"
        "torch.cuda.get_device_name = lambda i=0: 'Fake GPU'\n")
    wheels = tmp_path / "whl"
    wheels.mkdir()
    _wheel(wheels, "gpucheck_missing_pkg", "0.1")  # not installed: installed by the script
    _wheel(wheels, "numpy", "0.0.1")  # installed already: left alone
    out, site = tmp_path / "out", tmp_path / "site"
    env = {**os.environ, "PYTHONPATH": str(fake), "OUT": str(out), "WHEELS": str(wheels), "SITE_DIR": str(site),
           "TESTS_TIMEOUT": "120", "BENCH_TIMEOUT": "60"}
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert sorted(p.name for p in site.iterdir()) == ["gpucheck_missing_pkg", "gpucheck_missing_pkg-0.1.dist-info"]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["wheels_installed"] == 1 and summary["devices"] == ["Fake GPU"]
    assert set(summary["stages"]) == {"gpu_tests", "rpo_step"}
    assert all(s["exit_code"] != 0 and not s["timed_out"] for s in summary["stages"].values())
    tests = json.loads((out / "gpu_tests.json").read_text())
    assert {t["test"].split("::")[-1].split("[")[0] for t in tests} >= {
        "test_bf16_on_policy_ratio_one_and_kl_zero_at_init", "test_lora_loads_with_flux_pipeline",
        "test_compile_on_and_off_agree", "test_exact_resume_within_bf16_tolerance",
        "test_two_step_fsdp_run_on_two_gpus"}
    fsdp = next(t for t in tests if "fsdp" in t["test"])
    assert fsdp["outcome"] == "skipped" and "FSDP needs 2 GPUs; 1 visible" in fsdp["detail"]
    assert (out / "gpu_tests.log").is_file() and (out / "rpo_step.log").is_file()
