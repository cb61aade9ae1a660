"""Bulk import speed: records/s of ``arr data import`` (target ≥ 5,000 records/s, issue 20 item 10).

Generates N synthetic T2I preference records in the ARR reference JSONL format (``query``,
``response`` with two image paths, ``label_rank``, a small ``meta``), each with two distinct small real
PNG images (SIZE², random pixels) in a temporary folder, then:

1. runs ``arr data import FILE --name bench --home TMP`` as a user would (a fresh process; the figure
   includes interpreter start-up and imports), and
2. repeats the import in this process with the two parts timed apart: ``load_dataset`` (parse,
   validate, read and decode each image, hash its bytes) and ``Store.put_dataset`` (the DuckDB
   insert), into a fresh state folder.

Each figure is given per wall-clock second and per CPU-second (user + system of the process): on a
shared machine the wall figure is mostly other processes' load (the 1-minute load average is printed).

Run: ``python benchmarks/bulk_import.py [--records 20000] [--size 32] [--out F.json]``. Prints
records/s for each; the image files are written once and are in the page cache when imported (the
figure measures the import, not the disk).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's arr_core, whatever is installed


def make_dataset(folder: Path, n: int, size: int) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    path = folder / "pairs.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            names = []
            for side in "ab":
                name = f"images/{i:07d}_{side}.png"
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / name)
                names.append(name)
            f.write(json.dumps({"query": f"a photo of object {i}", "response": names,
                                "label_rank": [1, 2] if i % 2 else [2, 1], "meta": {"i": i}}) + "\n")
    return path


def cli_import(path: Path, home: Path) -> tuple[float, float]:
    """(wall s, CPU s of the child: user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "arr_cli", "data", "import", str(path), "--name", "bench",
                          "--home", str(home)], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"arr data import failed ({res.returncode}):\n{res.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def parts(path: Path, home: Path) -> dict[str, float]:
    """Wall and CPU seconds of load_dataset and put_dataset (modules imported beforehand)."""
    import pyarrow  # noqa: F401 (imported by put_dataset; its import is start-up, not import work)

    from arr_core.data.dataset import load_dataset
    from arr_core.store import Store

    store = Store(home)
    store.list_datasets()  # creates the store (migrations)
    w0, c0 = time.perf_counter(), time.process_time()
    ds = load_dataset(path, name="bench")
    w1, c1 = time.perf_counter(), time.process_time()
    store.put_dataset(ds)
    w2, c2 = time.perf_counter(), time.process_time()
    return {"records": len(ds.records), "load_wall_s": w1 - w0, "load_cpu_s": c1 - c0,
            "store_wall_s": w2 - w1, "store_cpu_s": c2 - c1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--size", type=int, default=32, help="image side in pixels")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="arr-bulk-") as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        path = make_dataset(tmp_path / "data", args.records, args.size)
        print(f"generated {args.records} records, {2 * args.records} PNGs of {args.size}² in "
              f"{time.perf_counter() - t0:.1f} s")
        wall, cpu = cli_import(path, tmp_path / "home_cli")
        n = args.records
        print(f"arr data import: {n} records in {wall:.2f} s wall = {n / wall:,.0f} records/s; "
              f"{cpu:.2f} s CPU = {n / cpu:,.0f} records per CPU-second (fresh process, start-up included)")
        t = parts(path, tmp_path / "home_parts")
        for part in ("load", "store"):
            print(f"in process, {part:5s}: {t[part + '_wall_s']:.2f} s wall ({n / t[part + '_wall_s']:,.0f} records/s), "
                  f"{t[part + '_cpu_s']:.2f} s CPU ({n / t[part + '_cpu_s']:,.0f} records per CPU-second)")
        both_wall, both_cpu = t["load_wall_s"] + t["store_wall_s"], t["load_cpu_s"] + t["store_cpu_s"]
        print(f"in process, both : {n / both_wall:,.0f} records/s wall, {n / both_cpu:,.0f} records per CPU-second")
    load = os.getloadavg()[0]
    print(f"load average (1 min) at the end: {load:.1f} on {os.cpu_count()} CPUs")
    result = {"records": n, "image_size": args.size, "cli_wall_s": round(wall, 3), "cli_cpu_s": round(cpu, 3),
              "cli_records_per_s": round(n / wall, 1), "cli_records_per_cpu_s": round(n / cpu, 1),
              **{k: round(v, 3) for k, v in t.items() if k != "records"},
              "in_process_records_per_s": round(n / both_wall, 1),
              "in_process_records_per_cpu_s": round(n / both_cpu, 1), "load_average_1min": round(load, 2),
              "machine": f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
              "command": " ".join(["python", "benchmarks/bulk_import.py", *sys.argv[1:]])}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
