"""Throughput of the VLM client: requests/s against the served scene VLM, and judged pairs/s and
bytes per pair with realistic 1024² images.

Default mode: starts ``arr vlm serve --backend scene --latency-ms L`` in a separate process (so server
and client do not share one interpreter), then sends N judge requests (two 64-px scene images each,
distinct requests, cache off) at concurrency C ∈ {1, 8, 32, 64} through ``VLMClient`` +
``OpenAIBackend``. Prints achieved requests/s next to Little's-law bound C / L and next to the
reference's pattern: one blocking request at a time with the synchronous ``openai.OpenAI`` client
(bound 1 / L).

``--images SIZE`` mode (issue 21): T2I pairs of SIZE² photo-like images (1/f spectrum plus grain:
natural-image statistics, so PNG and JPEG sizes are realistic) judged in both orders
(``judge_many``, order swap) with the default VLM settings (``VLMConfig()``: max_side 1024, auto →
JPEG q90). Reports, per image: encoding CPU ms and base64 bytes for PNG at full size (the old
behaviour) and for the default policy; per pair: request bytes (both orders), judged pairs/s,
client CPU per pair. The server is, by default, a fixed-answer endpoint with latency L in a separate
process (the figures measure the client and transport); ``--base-url URL --model NAME`` runs the same
requests against a real endpoint instead, e.g. vLLM:

    vllm serve Qwen/Qwen3-VL-8B-Instruct --max-model-len 16384 --limit-mm-per-prompt '{"image": 3}'
    python benchmarks/vlm_throughput.py --images 1024 --pairs 64 --concurrency 32 \
        --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen3-VL-8B-Instruct

Run: ``python benchmarks/vlm_throughput.py [--latency-ms 200] [--concurrency 1 8 32 64] [--out F.json]``.
The scene VLM and the fixed endpoint are simulators; these figures measure the client and transport,
not any real VLM.
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


def _start(cmd: list[str], port: int) -> subprocess.Popen:
    """Run ``cmd`` (a server on ``port``) and wait until it answers ``/v1/models``."""
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


def start_server(latency_ms: float, port: int) -> subprocess.Popen:
    return _start([sys.executable, "-m", "arr_cli", "vlm", "serve", "--backend", "scene", "--port", str(port),
                   "--latency-ms", str(latency_ms)], port)


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


# --------------------------------------------------------------------------- --images mode

FIXED_ANSWER = '{"rank": [1, 2], "reason": "fixed answer of the benchmark endpoint"}'


class FixedBackend:
    """A VLM backend that answers every request with the same valid judge answer (no image work)."""

    name = "fixed"
    model = "fixed-judge"

    async def chat(self, messages, *, temperature=0.0, max_tokens=512, seed=None, json_mode=False):
        return FIXED_ANSWER, {"prompt_tokens": 0, "completion_tokens": 16}


def photo_like(size: int, seed: int, grain: float = 6.0):
    """A size² RGB image with natural-image statistics: a 1/f^1.8 power spectrum in three correlated
    channels plus Gaussian grain (sd ``grain``). Its PNG is ~2.7 MB as base64 at 1024² (real photos
    and diffusion outputs: ~1.5–3.5 MB); JPEG q90 ~0.3 MB."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2
    f[0, 0] = 1.0
    chans = []
    for _ in range(3):
        spec = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))) / f ** 0.9
        x = np.real(np.fft.ifft2(spec))
        chans.append((x - x.mean()) / x.std())
    mix = np.array([[1.0, 0.6, 0.3], [0.5, 1.0, 0.4], [0.3, 0.5, 1.0]])
    img = np.tensordot(np.stack(chans, -1), mix, 1)
    img = 128 + 40 * img / img.std() + rng.normal(0, grain, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def encoding_table(images: list) -> list[dict]:
    """CPU ms and base64 bytes per image: PNG at full size (the old behaviour) vs the default policy."""
    from arr_core.data.images import ImagePolicy, clear_encode_caches, encode_image, to_data_url

    rows = []
    for name, enc in (("png, full size (before)", lambda im: to_data_url(im)),
                      ("default: auto → jpeg q90, max_side 1024", lambda im: encode_image(im, ImagePolicy())),
                      ("webp q80, max_side 1024", lambda im: encode_image(im, ImagePolicy(fmt="webp", quality=80)))):
        clear_encode_caches()
        c0 = time.process_time()
        sizes = [len(enc(im)) for im in images]
        cpu = time.process_time() - c0
        rows.append({"encoding": name, "cpu_ms_per_image": round(1000 * cpu / len(images), 1),
                     "bytes_per_image": int(np.mean(sizes))})
    clear_encode_caches()
    return rows


def start_fixed_server(latency_ms: float, port: int) -> subprocess.Popen:
    return _start([sys.executable, str(Path(__file__).resolve()), "--serve-fixed", "--port", str(port),
                   "--latency-ms", str(latency_ms)], port)


def run_images(args: argparse.Namespace) -> dict:
    from arr_core.data.images import ENCODE_STATS, clear_encode_caches
    from arr_core.judge.judge import JudgeItem, judge_many
    from arr_core.vlm.config import VLMConfig, build_client

    t0 = time.perf_counter()
    if args.pairs_file is not None:
        from arr_core.data.dataset import load_dataset

        items = [JudgeItem.from_record(r) for r in load_dataset(args.pairs_file).records[:args.pairs]]
    else:
        items = [JudgeItem(task="t2i", prompt="a photo of a red apple on a wooden table",
                           images=[photo_like(args.images, 2 * i), photo_like(args.images, 2 * i + 1)],
                           key=f"bench-{i}") for i in range(args.pairs)]
    made_s = time.perf_counter() - t0
    sample = [im for it in items[:4] for im in it.images if not isinstance(im, str)]
    enc_rows = encoding_table(sample) if sample and hasattr(sample[0], "tobytes") else []
    proc = None
    if args.base_url is None:
        port = free_port()
        proc = start_fixed_server(args.latency_ms, port)
        base_url, model = f"http://127.0.0.1:{port}/v1", FixedBackend.model
    else:
        base_url, model = args.base_url, args.model
    try:
        cfg = VLMConfig(backend="openai", base_url=base_url, model=model, cache_mode="off",
                        concurrency=args.concurrency[0], api_key=os.environ.get("OPENAI_API_KEY") or "EMPTY")
        client = build_client(cfg)
        clear_encode_caches()
        e0 = (ENCODE_STATS.encoded, ENCODE_STATS.encode_s)
        c0, w0 = time.process_time(), time.perf_counter()
        js = asyncio.run(judge_many(client, items, order="swap"))
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
    st = client.stats()
    encoded = ENCODE_STATS.encoded - e0[0]
    return {
        "image_size": args.images if args.pairs_file is None else None, "pairs": len(items),
        "concurrency": args.concurrency[0], "server": "fixed-answer endpoint" if proc is not None else base_url,
        "latency_ms": args.latency_ms if proc is not None else None,
        "abstained": sum(j.outcome == "abstain" for j in js), "requests": st["calls"],
        "judged_pairs_per_s": round(len(items) / wall, 2), "wall_s": round(wall, 3),
        "bound_pairs_per_s": round(args.concurrency[0] / (2 * args.latency_ms / 1000), 2) if proc is not None else None,
        "request_bytes_max": st["request_bytes_max"], "request_bytes_mean": st["bytes_per_call"],
        "bytes_per_pair": round(st["request_bytes"] / len(items)),
        "images_encoded": encoded, "encode_ms_per_image": round(1000 * (ENCODE_STATS.encode_s - e0[1]) / max(1, encoded), 1),
        "client_cpu_ms_per_pair": round(1000 * cpu / len(items), 1), "image_generation_s": round(made_s, 1),
        "prompt_tokens": st["prompt_tokens"], "completion_tokens": st["completion_tokens"],
        "reasoning_tokens": st["reasoning_tokens"], "adaptations": st["adaptations"], "encodings": enc_rows,
    }


def print_images(res: dict, machine: str) -> None:
    print(f"judged T2I pairs, {res['image_size']}² photo-like images, order swap (2 requests per pair), "
          f"default VLM settings; server: {res['server']}"
          + (f", latency {res['latency_ms']:g} ms" if res["latency_ms"] is not None else "") + f"; {machine}")
    for r in res["encodings"]:
        print(f"  encode {r['encoding']:<42} {r['cpu_ms_per_image']:>7.1f} ms CPU/image  "
              f"{r['bytes_per_image'] / 1e6:>6.3f} MB/image (base64)")
    print(f"  requests: {res['requests']}, max {res['request_bytes_max'] / 1e6:.3f} MB, mean "
          f"{res['request_bytes_mean'] / 1e6:.3f} MB; bytes/pair {res['bytes_per_pair'] / 1e6:.3f} MB")
    print(f"  images encoded {res['images_encoded']} ({res['encode_ms_per_image']} ms each, both orders and "
          f"retries reuse them); client CPU {res['client_cpu_ms_per_pair']} ms/pair")
    bound = f" (bound C/2L = {res['bound_pairs_per_s']})" if res["bound_pairs_per_s"] else ""
    print(f"  judged pairs/s: {res['judged_pairs_per_s']}{bound} at concurrency {res['concurrency']}; "
          f"abstained {res['abstained']}")
    ok = res["request_bytes_max"] <= 1_000_000
    print(f"  target: a {res['image_size']}² T2I pair request <= 1 MB: {'met' if ok else 'NOT met'}")


def serve_fixed(port: int, latency_ms: float) -> None:
    from arr_core.vlm.server import FaultConfig, serve

    serve(FixedBackend(), FaultConfig(latency_ms=latency_ms), port=port)


def _machine() -> str:
    load = os.getloadavg()
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
            f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) at the end")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-ms", type=float, default=200.0)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--per-slot", type=int, default=30, help="requests per concurrency slot (N = max(20, k*C)); 30 waves amortise connection set-up and the last wave's tail")
    ap.add_argument("--reference-n", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    ap.add_argument("--images", type=int, default=None, metavar="SIZE",
                    help="judged pairs/s and bytes/pair with SIZE² photo-like T2I pairs (e.g. 1024)")
    ap.add_argument("--pairs", type=int, default=32, help="--images: pairs to judge (both orders)")
    ap.add_argument("--pairs-file", type=Path, default=None, help="--images: judge these pairs instead "
                    "(any dataset file arr judge reads)")
    ap.add_argument("--base-url", default=None, help="--images: a real endpoint instead of the fixed one")
    ap.add_argument("--model", default=None, help="--images with --base-url: the served model name")
    ap.add_argument("--serve-fixed", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_fixed:
        serve_fixed(args.port, args.latency_ms)
        return
    if args.images is not None:
        if args.base_url is not None and not args.model:
            ap.error("--base-url needs --model")
        res = run_images(args)
        machine = _machine()
        print_images(res, machine)
        if args.out:
            args.out.write_text(json.dumps({"machine": machine, **res}, indent=1) + "\n")
        return
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
    machine = _machine()
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
