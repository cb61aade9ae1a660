"""Request image encoding: the size cap, the formats, each image encoded once per content, the
request-size limit, and the bytes of a 1024² T2I pair request with the default settings."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest
from PIL import Image

from arr_core.data import images as I
from arr_core.data.images import ImagePolicy, encode_image, reencode_data_url
from arr_core.judge.judge import JudgeItem, judge_request
from arr_core.vlm.base import RequestTooLargeError
from arr_core.vlm.client import VLMClient
from arr_core.vlm.config import VLMConfig, build_client
from arr_core.vlm.messages import decode_data_url, encode_images, request_chars

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("vlm_throughput", ROOT / "benchmarks" / "vlm_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def photos():
    """Two 1024² photo-like images (natural-image statistics: PNG ~2.7 MB as base64 each)."""
    bench = _bench()
    return [bench.photo_like(1024, 0), bench.photo_like(1024, 1)]


class Recorder:
    name, model = "recorder", "rec-1"

    def __init__(self):
        self.sent = []

    async def chat(self, messages, *, temperature, max_tokens, seed=None, json_mode=False):
        self.sent.append(messages)
        return '{"rank": [1, 2], "reason": "r"}', {}


def test_a_1024_t2i_pair_request_is_under_1_mb_with_the_defaults(photos):
    """The issue's target (bytes, not time): PNG at full size made this request ~5.5 MB."""
    rec = Recorder()
    client = build_client(VLMConfig())
    client.backend = rec
    item = JudgeItem(task="t2i", prompt="a photo of a red apple", images=photos, key="k")
    asyncio.run(client.ask_many([judge_request(item, p, "1. Objects are sharp.") for p in ([0, 1], [1, 0])]))
    sizes = [request_chars(m) for m in rec.sent]
    assert len(sizes) == 2 and max(sizes) <= 1_000_000, sizes
    assert client.stats()["request_bytes_max"] == max(sizes)
    urls = [p["image_url"]["url"] for p in rec.sent[0][0]["content"] if p["type"] == "image_url"]
    assert all(u.startswith("data:image/jpeg;base64,") for u in urls)
    assert decode_data_url(urls[0]).size == (1024, 1024)
    png = sum(len(I.to_data_url(im)) for im in photos)
    assert png > 4 * max(sizes)  # what the old PNG encoding sent


def test_each_image_is_encoded_once_for_both_orders_and_retries(photos):
    I.clear_encode_caches()
    before = I.ENCODE_STATS.encoded
    item = JudgeItem(task="t2i", prompt="p", images=photos, key="k")
    reqs = [judge_request(item, p, None) for p in ([0, 1], [1, 0], [0, 1])]
    policy = ImagePolicy()
    for r in reqs:
        encode_images(r.messages, policy)
    assert I.ENCODE_STATS.encoded - before == 2


def test_a_client_with_another_policy_reencodes_from_the_original_pixels(photos):
    """No JPEG of a JPEG: the client finds the source image the template encoded."""
    url = encode_image(photos[0], ImagePolicy())  # what the template puts into the request
    webp = ImagePolicy(max_side=512, fmt="webp", quality=80)
    direct = encode_image(photos[0], webp)
    assert reencode_data_url(url, webp) == direct
    assert decode_data_url(direct).size == (512, 512)


def test_policy_formats_size_cap_and_pass_through():
    small = Image.new("RGB", (64, 48), (200, 30, 30))
    assert encode_image(small, ImagePolicy()).startswith("data:image/png;")  # auto: small stays lossless
    big = Image.linear_gradient("L").resize((600, 300)).convert("RGB")
    jpg = encode_image(big, ImagePolicy(max_side=400))
    assert jpg.startswith("data:image/jpeg;") and decode_data_url(jpg).size == (400, 200)
    assert encode_image(big, ImagePolicy(fmt="png", max_side=None)).startswith("data:image/png;")
    # a JPEG data URL from elsewhere that fits is sent as it is (never recompressed) ...
    I.clear_encode_caches()
    assert reencode_data_url(jpg, ImagePolicy(max_side=400)) is jpg
    # ... and one too large is downscaled
    assert decode_data_url(reencode_data_url(jpg, ImagePolicy(max_side=100))).size == (100, 50)
    with pytest.raises(ValueError, match="format"):
        ImagePolicy(fmt="gif")
    with pytest.raises(ValueError, match="max_side"):
        ImagePolicy(max_side=8)


def test_requests_over_max_request_bytes_are_shrunk_or_refused(photos):
    item = JudgeItem(task="t2i", prompt="p", images=photos, key="k")
    req = judge_request(item, [0, 1], None)
    rec = Recorder()
    client = VLMClient(rec, image_policy=ImagePolicy(), max_request_bytes=300_000, cache_mode="off")
    assert asyncio.run(client.ask(req)).error is None
    assert request_chars(rec.sent[0]) <= 300_000
    assert max(decode_data_url(p["image_url"]["url"]).size[0] for p in rec.sent[0][0]["content"]
               if p["type"] == "image_url") < 1024
    tiny = VLMClient(Recorder(), image_policy=ImagePolicy(), max_request_bytes=5_000, cache_mode="off")
    with pytest.raises(RequestTooLargeError, match="max_request_bytes"):
        asyncio.run(tiny.ask(req))


@pytest.mark.slow
def test_the_images_benchmark_runs_and_meets_the_bytes_target(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "res.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "vlm_throughput.py"), "--images", "1024",
                        "--pairs", "4", "--concurrency", "4", "--latency-ms", "50", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["request_bytes_max"] <= 1_000_000 and res["abstained"] == 0 and res["requests"] == 8
    assert res["images_encoded"] == 8 and res["judged_pairs_per_s"] > 0
