"""`lofit serve` under concurrent load, measured as a user would, with the `openai` client.

Two servers run side by side, each in its own process on loopback, on the same model and prompts:
the batching server of `lofit.serve` ("new") and the one-request-at-a-time server it replaced
("old", `lofit/serve.py` read from git at `--old-ref`). Levels alternate between them, so a
background load on the machine weighs on both alike. Measured:
- tokens/s and p50/p95 latency at each `--clients` level (each client sends `--requests`
  greedy `--max-tokens`-token completions one after another; prompts differ in length);
- the new server with 4 random LoFiT adapters: a 16-client workload where request i asks for
  adapter i mod 4 ("mixed") against one where all ask for the same adapter ("single");
- cancellation: seconds from closing a streamed request to its batch row being freed (/stats),
  and on both servers the latency of a 2-token request sent right after a client gave up on a
  long one.
Prints one JSON object (also written to `--out`).

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE nice -n 19 python benchmarks/serve.py --out benchmarks/results/serve-cpu2.json
    python benchmarks/serve.py --tiny        # a tiny random model, seconds: the test
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD_REF = "cb82ec3eeeeef421fa5d81e0bdb63abed5564b22"  # the last commit with lofit/serve.py
ADAPTERS = 4
ADAPTER_HEADS = 16
MODEL_ID = "lofit"


# ------------------------------------------------------------------ server processes (child mode)
def serve_child(args: argparse.Namespace) -> None:
    """Run one server until killed (`--serve new|old`)."""
    import uvicorn

    from lofit.backbone import BackboneConfig, load_backbone

    backbone = load_backbone(BackboneConfig(model=args.model_dir, dtype="float32", device="cpu"))
    if args.serve == "old":
        spec = importlib.util.spec_from_file_location("old_lofit_serve", args.old_module)
        old = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
        app = old.create_app(backbone, None, MODEL_ID, max_queue=64)
    else:
        from lofit.serve.main import build_app

        app = build_app(backbone, dict(a.split("=", 1) for a in args.adapter), MODEL_ID, max_batch=16, max_queue=64)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server(kind: str, model_dir: str, extra: list[str]) -> Iterator[str]:
    """A server process; yields its base URL once it answers."""
    import httpx2

    port = free_port()
    command = [sys.executable, __file__, "--serve", kind, "--model-dir", model_dir, "--port", str(port), *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{kind} server exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server did not start")
            try:
                httpx2.get(url + "/models", timeout=2)
                break
            except httpx2.TransportError:
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ------------------------------------------------------------------ workloads
def prompts(count: int) -> list[str]:
    """Openings of different lengths that a model continues at length (few early EOS, so the
    figures measure generation rather than prompt passes); the same for every server."""
    topics = ["the sea", "mountains", "old libraries", "bread", "rivers in spring", "the moon", "trains", "bees"]
    return [
        f"Here is a long essay, in many paragraphs, about {topics[i % len(topics)]}"
        + " and the people who love it" * (i % 5)
        + ".\n\nChapter 1.\n\n"
        for i in range(count)
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load_test(url: str, clients: int, requests: int, max_tokens: int, model_for: Callable[[int], str]) -> dict:
    """`clients` threads, each sending `requests` completions in turn; tokens/s over the wall time."""
    import openai

    texts = prompts(clients * requests)
    latencies: list[float] = []
    tokens: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        api = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=900)
        for r in range(requests):
            number = index * requests + r
            start = time.perf_counter()
            try:
                reply = api.completions.create(model=model_for(number), prompt=texts[number], max_tokens=max_tokens, temperature=0)
            except openai.OpenAIError as err:
                with lock:
                    errors.append(f"{type(err).__name__}: {err}")
                continue
            with lock:
                latencies.append(time.perf_counter() - start)
                tokens.append(reply.usage.completion_tokens)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    result = {
        "requests": len(latencies),
        "tokens": sum(tokens),
        "wall_s": round(wall, 3),
        "tokens_per_s": round(sum(tokens) / wall, 2),
        "latency_p50_s": round(percentile(latencies, 0.5), 3) if latencies else None,
        "latency_p95_s": round(percentile(latencies, 0.95), 3) if latencies else None,
    }
    if errors:
        result["errors"] = errors[:3]
    return result


def active_rows(url: str) -> int:
    import httpx2

    return httpx2.get(url.removesuffix("/v1") + "/stats", timeout=10).json()["active_rows"]


def time_to_free(url: str, max_tokens: int) -> float:
    """Seconds from closing a streamed completion (after its first chunks) to its row being freed."""
    import openai

    api = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=900)
    stream = api.completions.create(model=MODEL_ID, prompt=prompts(1)[0], max_tokens=max_tokens, temperature=0, stream=True)
    for _, _chunk in zip(range(2), stream):
        pass
    closed = time.perf_counter()
    stream.close()
    while active_rows(url) > 0:
        time.sleep(0.002)
    return time.perf_counter() - closed


def after_giving_up(url: str, max_tokens: int, give_up_s: float) -> float:
    """Latency of a 2-token request sent right after another client gave up on a long one."""
    import openai

    impatient = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=give_up_s)
    try:
        impatient.completions.create(model=MODEL_ID, prompt=prompts(2)[1], max_tokens=max_tokens, temperature=0)
    except openai.APITimeoutError:
        pass
    api = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=900)
    start = time.perf_counter()
    api.completions.create(model=MODEL_ID, prompt=prompts(1)[0], max_tokens=2, temperature=0)
    return round(time.perf_counter() - start, 3)


# ------------------------------------------------------------------ setup
def tiny_model_dir(folder: Path) -> str:
    """A 2-layer random Llama with SmolLM2's tokenizer, saved as a model folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from lofit.backbone import resolve_model_path
    from lofit.convert import DEFAULT_MODEL

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_MODEL))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def random_adapters(model_dir: str, folder: Path, heads: int) -> list[str]:
    """`ADAPTERS` LoFiT adapters with seeded random offsets on `heads` random heads each."""
    import torch

    from lofit.adapter import save_adapter
    from lofit.backbone import BackboneConfig, load_backbone
    from lofit.intervention import HeadIntervention, all_heads

    backbone = load_backbone(BackboneConfig(model=model_dir, dtype="float32", device="cpu"))
    candidates = all_heads(backbone.geometry)
    specs = []
    for i in range(ADAPTERS):
        generator = torch.Generator().manual_seed(i)
        chosen = [candidates[j] for j in torch.randperm(len(candidates), generator=generator)[:heads].tolist()]
        intervention = HeadIntervention(backbone.geometry, ("offset",), heads=chosen, init_std=0.05, generator=generator)
        path = save_adapter(intervention, folder / f"a{i}", backbone.name, model_type=backbone.model.config.model_type)
        specs.append(f"a{i}={path}")
    return specs


def old_module(ref: str, folder: Path) -> Path:
    source = subprocess.run(["git", "show", f"{ref}:lofit/serve.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    path = folder / "old_lofit_serve.py"
    path.write_text(source.stdout, encoding="utf-8")
    return path


# ------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--tiny", action="store_true", help="tiny random model, short workloads (the test)")
    parser.add_argument("--clients", default="1,4,16", help="comma-separated concurrency levels")
    parser.add_argument("--requests", type=int, default=2, help="requests per client at each level")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--cancel-tokens", type=int, default=128, help="length of the request a client gives up on")
    parser.add_argument("--old-ref", default=OLD_REF, help="git revision holding the old lofit/serve.py")
    parser.add_argument("--out", default=None)
    parser.add_argument("--serve", choices=("new", "old"), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--old-module", help=argparse.SUPPRESS)
    parser.add_argument("--adapter", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_child(args)
        return
    levels = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        if args.tiny:
            model_dir = tiny_model_dir(tmp_path / "model")
        else:
            from lofit.backbone import resolve_model_path

            model_dir = resolve_model_path(args.model)
        adapters = random_adapters(model_dir, tmp_path / "adapters", 2 if args.tiny else ADAPTER_HEADS)
        old = old_module(args.old_ref, tmp_path)
        report: dict = {
            "model": "tiny-random-llama" if args.tiny else args.model,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "max_tokens": args.max_tokens,
            "requests_per_client": args.requests,
            "old_ref": args.old_ref,
        }
        new_args = [a for spec in adapters for a in ("--adapter", spec)]
        with server("new", model_dir, new_args) as new_url, server("old", model_dir, ["--old-module", str(old)]) as old_url:
            urls = {"old": old_url, "new": new_url}
            for url in urls.values():  # warm-up: first-call costs stay out of the figures
                load_test(url, 1, 1, 2, lambda _: MODEL_ID)
            concurrency = {}
            for clients in levels:
                row = {kind: load_test(url, clients, args.requests, args.max_tokens, lambda _: MODEL_ID) for kind, url in urls.items()}
                row["speedup"] = round(row["new"]["tokens_per_s"] / row["old"]["tokens_per_s"], 2)
                concurrency[str(clients)] = row
            report["concurrency"] = concurrency

            top = max(levels)
            rounds: dict[str, list[dict]] = {"single": [], "mixed": []}
            for _ in range(2):
                rounds["single"].append(load_test(new_url, top, args.requests, args.max_tokens, lambda _: "a0"))
                rounds["mixed"].append(load_test(new_url, top, args.requests, args.max_tokens, lambda i: f"a{i % ADAPTERS}"))
            speed = {name: statistics.median(r["tokens_per_s"] for r in runs) for name, runs in rounds.items()}
            report["adapters"] = {
                "clients": top,
                "adapters": ADAPTERS,
                "heads_per_adapter": 2 if args.tiny else ADAPTER_HEADS,
                **rounds,
                "mixed_over_single": round(speed["mixed"] / speed["single"], 3),
            }

            freed = [time_to_free(new_url, args.cancel_tokens) for _ in range(3)]
            give_up_s = 0.5 if args.tiny else 1.0
            report["cancellation"] = {
                "freed_after_close_s": [round(f, 4) for f in freed],
                "freed_after_close_median_s": round(statistics.median(freed), 4),
                "abandoned_request_tokens": args.cancel_tokens,
                "client_gave_up_after_s": give_up_s,
                "next_request_latency_s": {
                    kind: after_giving_up(url, args.cancel_tokens, give_up_s) for kind, url in urls.items()
                },
            }
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
