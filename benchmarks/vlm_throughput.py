"""Throughput of the VLM client against the served offline scene VLM with a fixed latency.

Starts ``arr vlm serve --backend scene --latency-ms L`` in a separate process (so server and client
do not share one interpreter), then sends N judge requests (two 64-px scene images each, distinct
requests, cache off) at concurrency C ∈ {1, 8, 32, 64} through ``VLMClient`` + ``OpenAIBackend``.
Prints achieved requests/s next to Little's-law bound C / L and next to the reference's pattern: one
blocking request at a time with the synchronous ``openai.OpenAI`` client (bound 1 / L).

Run: ``python benchmarks/vlm_throughput.py [--latency-ms 200] [--concurrency 1 8 32 64] [--out F.json]``.
The scene VLM is a simulator; these figures measure the client and transport, not any real VLM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arr_core.prompts.templates import build_judge  # noqa: E402
from arr_core.sim.world import render, sample_spec  # noqa: E402
from arr_core.sim.world.scene import scene_from_spec  # noqa: E402
from arr_core.vlm.client import VLMClient  # noqa: E402
from arr_core.vlm.openai_backend import OpenAIBackend  # noqa: E402
from arr_core.vlm.server import free_port  # noqa: E402

POOL = 32


def _cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) of this process or of ``pid`` (Linux /proc)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_requests(n: int, first_seed: int = 0) -> list:
    """``n`` distinct pairwise judge requests over a fixed pool of 64-px scene renders.

    Requests differ by their ``seed`` field; the images come from a pool of POOL pairs whose
    detector results the server caches after the warm-up pass (the scene VLM's perception is the
    simulator's cost, not the transport's).
    """
    rng = np.random.default_rng(0)
    pool = []
    for _ in range(POOL):
        spec = sample_spec(rng)
        pool.append((spec.prompt, [render(scene_from_spec(spec, rng), 64) for _ in range(2)]))
    reqs = []
    for i in range(n):
        prompt, images = pool[i % len(pool)]
        req = build_judge("t2i", prompt, images, rubrics_block=None)
        req.seed = first_seed + i  # distinct requests (seed is part of the request), same work each
        reqs.append(req)
    return reqs


def start_server(latency_ms: float, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "arr_cli", "vlm", "serve", "--backend", "scene", "--port", str(port),
           "--latency-ms", str(latency_ms)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1).read()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start within 60 s")


async def run_concurrent(base_url: str, reqs: list, c: int) -> tuple[float, dict]:
    backend = OpenAIBackend(base_url, None, "scene-vlm-1", timeout_s=30, max_retries=2)
    client = VLMClient(backend, cache_mode="off", concurrency=c)
    await client.ask_many(reqs[:min(c, 8)])  # warm up connections
    client = VLMClient(backend, cache_mode="off", concurrency=c)
    t0 = time.perf_counter()
    resps = await client.ask_many(reqs)
    wall = time.perf_counter() - t0
    await backend.aclose()
    bad = sum(r.error is not None for r in resps)
    if bad:
        raise RuntimeError(f"{bad} requests failed at concurrency {c}")
    return wall, client.stats()


def run_reference(base_url: str, reqs: list) -> float:
    """The reference's pattern: a synchronous client, one blocking request after the other."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="EMPTY", max_retries=0)
    t0 = time.perf_counter()
    for r in reqs:
        client.chat.completions.create(model="scene-vlm-1", messages=r.messages, temperature=0.0,
                                       max_tokens=r.max_tokens)
    return time.perf_counter() - t0


def markdown_table(rows: list[dict], ref_rps: float, latency_ms: float, machine: str) -> str:
    lines = [f"Served scene VLM, L = {latency_ms:g} ms; {machine}.", "",
             "| C | N | req/s | bound C/L | fraction | reference req/s | × reference | p50 ms | p99 ms "
             "| client CPU ms/req | server CPU ms/req |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['concurrency']} | {r['n']} | {r['req_per_s']:.1f} | {r['littles_law_bound']:.0f} | "
                     f"{r['fraction_of_bound']:.2f} | {ref_rps:.2f} | {r['speedup_vs_reference']:.1f} | "
                     f"{1000 * r['p50_s']:.0f} | {1000 * r['p99_s']:.0f} | {r['client_cpu_ms_per_req']:.2f} | "
                     f"{r['server_cpu_ms_per_req']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-ms", type=float, default=200.0)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--per-slot", type=int, default=30, help="requests per concurrency slot (N = max(20, k*C)); 30 waves amortise connection set-up and the last wave's tail")
    ap.add_argument("--reference-n", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = ap.parse_args()
    lat = args.latency_ms / 1000.0
    port = free_port()
    proc = start_server(args.latency_ms, port)
    base_url = f"http://127.0.0.1:{port}/v1"
    rows = []
    try:
        asyncio.run(run_concurrent(base_url, make_requests(POOL, first_seed=10**6), 8))  # warm-up
        ref_reqs = make_requests(args.reference_n, first_seed=1)
        ref_wall = run_reference(base_url, ref_reqs)
        ref_rps = args.reference_n / ref_wall
        for c in args.concurrency:
            n = max(20, args.per_slot * c)
            reqs = make_requests(n, first_seed=1000 * c)
            c0, s0 = _cpu_s(), _cpu_s(proc.pid)
            wall, st = asyncio.run(run_concurrent(base_url, reqs, c))
            c1, s1 = _cpu_s(), _cpu_s(proc.pid)
            rps = n / wall
            bound = c / lat
            rows.append({"concurrency": c, "n": n, "wall_s": round(wall, 3), "req_per_s": round(rps, 2),
                         "littles_law_bound": round(bound, 2), "fraction_of_bound": round(rps / bound, 3),
                         "reference_req_per_s": round(ref_rps, 2), "speedup_vs_reference": round(rps / ref_rps, 1),
                         "p50_s": round(st["latency_p50_s"], 4), "p99_s": round(st["latency_p99_s"], 4),
                         "max_in_flight": st["max_in_flight"],
                         "client_cpu_ms_per_req": round(1000 * (c1 - c0) / n, 2),
                         "server_cpu_ms_per_req": round(1000 * (s1 - s0) / n, 2)})
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    load = os.getloadavg()
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
               f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) at the end")
    print(f"served scene VLM, latency L = {args.latency_ms:g} ms; machine: {machine}")
    print(f"reference pattern (one blocking request at a time): {ref_rps:.2f} req/s (bound 1/L = {1 / lat:.2f})")
    print(f"{'C':>4} {'N':>5} {'req/s':>9} {'C/L':>9} {'frac':>6} {'x ref':>6} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'inflight':>8} {'cli CPU ms/req':>14} {'srv CPU ms/req':>14}")
    for r in rows:
        print(f"{r['concurrency']:>4} {r['n']:>5} {r['req_per_s']:>9.2f} {r['littles_law_bound']:>9.2f} "
              f"{r['fraction_of_bound']:>6.3f} {r['speedup_vs_reference']:>6.1f} {1000 * r['p50_s']:>7.1f} "
              f"{1000 * r['p99_s']:>7.1f} {r['max_in_flight']:>8} {r['client_cpu_ms_per_req']:>14.2f} "
              f"{r['server_cpu_ms_per_req']:>14.2f}")
    ok = all(r["fraction_of_bound"] >= 0.9 for r in rows)
    print(f"target >= 0.9 of the bound at every C: {'met' if ok else 'NOT met'}")
    if args.markdown:
        print()
        print(markdown_table(rows, ref_rps, args.latency_ms, machine))
    if args.out:
        args.out.write_text(json.dumps({"latency_ms": args.latency_ms, "machine": machine,
                                        "reference_req_per_s": ref_rps, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
