"""``corevital proxy`` in front of a real llama.cpp server: the acceptance run of docs/proxy.md.

Starts llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``) with the default
model (SmolLM2-135M-Instruct, Q4_1 GGUF) and ``corevital proxy`` (its own process, the CLI as users
run it, storing into a fresh SQLite store) in front of it, both on 127.0.0.1, then:

1. **Traffic**: ``--requests`` requests (default 100; chat and completions, every other one
   streaming, every fifth asking for logprobs itself), ``--concurrency`` at a time (default 8),
   greedy with a seed. Each is sent twice, to the server directly and through the proxy: the two
   answers must be byte-identical apart from the fields the server makes new for every response
   (``id``, ``created``); with logprobs asked, that includes every token choice and its
   log-probability. Then one report per request must be stored. The proxy's added latency per
   request and per streamed chunk (p50/p95, measured by the proxy itself and printed when it stops)
   and the end-to-end time of the requests direct and proxied are printed.
2. **Errors**: malformed requests reach the client with the server's status and body.
3. **Entropy estimate**: for ``--entropy-prompts`` completion prompts, the logprobs tier's entropy
   bounds and their midpoint (the tier's estimate) with ``top_logprobs`` 5 and 20 (the computation
   the proxy makes) against the exact
   entropy from llama.cpp's full-vocabulary logits in process (``--backend llama-cpp``) on the
   same greedy tokens.
4. **Upstream down**: the server is stopped; requests through the proxy get 502 with an
   OpenAI-style error, the proxy keeps running, and once the server is back on the same port
   requests pass again.

    .venv/bin/python bench/proxy_engine.py [--requests 100] [--concurrency 8] [--max-tokens 24] [--json FILE]

Needs llama-cpp-python with its server (``make test-engines`` installs it). Exit status 1 when an
answer differs or a report is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(1, str(REPO))  # tests.support.llama_server

from corevital.capture.default_model import locate_default_model  # noqa: E402
from corevital.capture.logprobs import capture_response  # noqa: E402
from corevital.capture.openai_api import ObservedRequest  # noqa: E402
from tests.support.llama_server import LlamaServer  # noqa: E402
from tests.support.proxy_process import CHAT, COMPLETIONS, FRESH, ProxyProcess, stored_reports  # noqa: E402

VOCAB = 49152
# SSE comment lines: sse-starlette's keep-alive pings (": ping - <time>") every 15 s while a stream
# waits its turn; how many and when depend on the wait, not on the proxy (which passes them on)
SSE_COMMENT = re.compile(rb"(?m)^:[^\r\n]*\r?\n\r?\n?")
LATENCY = re.compile(
    r"per request p50 ([\d.]+) ms, p95 ([\d.]+) ms \((\d+) observed\); per streamed chunk "
    r"p50 ([\d.]+) ms, p95 ([\d.]+) ms \((\d+) chunks\)"
)
PROMPTS = [
    "Why is the sky blue?",
    "Write a haiku about the sea.",
    "List three uses of copper.",
    "What is the capital of Japan?",
    "Explain photosynthesis in one sentence.",
    "Give me a name for a grey cat.",
    "How many legs does a spider have?",
    "Translate 'good morning' into French.",
    "What does a compiler do?",
    "Describe a rainbow to a child.",
    "Suggest a healthy breakfast.",
    "What is 12 times 7?",
]
COMPLETION_PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "The three primary colours are",
    "Water boils at",
    "The largest planet in the solar system is",
    "def fibonacci(n):",
    "In 1969, the first person to walk on the Moon",
    "A good way to learn a language is",
    "The opposite of hot is",
    "My favourite fruit is",
    "The recipe calls for two cups of",
    "Machine learning is",
]


def normalised(content: bytes) -> bytes:
    return SSE_COMMENT.sub(b"", FRESH.sub(rb'"\1": _', content))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def request_body(i: int, max_tokens: int) -> tuple[str, dict[str, Any]]:
    chat = i % 4 in (0, 1)
    body: dict[str, Any] = (
        {"messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]}
        if chat
        else {"prompt": COMPLETION_PROMPTS[i % len(COMPLETION_PROMPTS)]}
    )
    body.update(max_tokens=max_tokens, temperature=0.0, seed=0, stream=i % 2 == 0)
    if i % 5 == 4:  # the client asks for logprobs itself: token choices compared too
        body.update({"logprobs": True, "top_logprobs": 5} if chat else {"logprobs": 5})
    return (CHAT if chat else COMPLETIONS), body


def send(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[int, bytes, float, int]:
    """Status, body bytes, seconds to the last byte, and the number of chunks read."""
    t0 = time.perf_counter()
    chunks = 0
    parts = []
    with client.stream("POST", url, json=body) as response:
        for part in response.iter_raw():
            parts.append(part)
            chunks += 1
        status = response.status_code
    return status, b"".join(parts), time.perf_counter() - t0, chunks


def traffic(server: LlamaServer, proxy: ProxyProcess, args: argparse.Namespace) -> dict[str, Any]:
    client = httpx.Client(timeout=600)

    def one(i: int) -> dict[str, Any]:
        path, body = request_body(i, args.max_tokens)
        order = [("direct", server.url), ("proxy", proxy.url)]
        if (i // 2) % 2:
            order.reverse()  # half the requests go through the proxy first (the server's prompt cache)
        got = {name: send(client, base + path, body) for name, base in order}
        (ds, dbody, dt, dchunks), (ps, pbody, pt, _) = got["direct"], got["proxy"]
        return {
            "i": i,
            "path": path,
            "stream": body["stream"],
            "asked_logprobs": "logprobs" in body,
            "status": (ds, ps),
            "identical": ds == ps == 200 and normalised(dbody) == normalised(pbody),
            "direct_s": dt,
            "proxy_s": pt,
            "chunks": dchunks,
        }

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        results = list(pool.map(one, range(args.requests)))
    wall = time.perf_counter() - t0
    client.close()
    return {"results": results, "wall_s": wall}


def errors(server: LlamaServer, proxy: ProxyProcess) -> list[dict[str, Any]]:
    cases = [
        (CHAT, b'{"messages": "not a list"}'),
        (COMPLETIONS, b'{"prompt": "x", "max_tokens": "many"}'),
        (COMPLETIONS, b"[1, 2]"),
        (CHAT, b"not json"),
    ]
    out = []
    for path, content in cases:
        direct = httpx.post(server.url + path, content=content, timeout=60)
        through = httpx.post(proxy.url + path, content=content, timeout=60)
        out.append(
            {
                "path": path,
                "status": [direct.status_code, through.status_code],
                "identical": (direct.status_code, direct.content) == (through.status_code, through.content),
            }
        )
    return out


def _token_ids(texts: list[str], vocabulary: dict[str, list[int]]) -> list[int] | None:
    """The vocabulary ids of the server's token texts (None when a text names no single token)."""
    ids = []
    for text in texts:
        candidates = vocabulary.get(text)
        if not candidates:
            return None
        ids.append(candidates[0])
    return ids


def _exact_entropy_transformers(loaded: Any, prompt_ids: list[int], ids: list[int]) -> list[float]:
    """Entropy (bits) of each generated position's full distribution, one teacher-forced pass of the
    transformers backend (the GGUF's weights dequantised to float32)."""
    import torch

    tokens = torch.tensor([prompt_ids + ids])
    with torch.no_grad():
        logits = loaded.model(input_ids=tokens).logits[
            0, len(prompt_ids) - 1 : len(prompt_ids) - 1 + len(ids)
        ]
    logp = torch.log_softmax(logits.double(), dim=-1)
    return [float(x) for x in (-(logp.exp() * logp).sum(-1) / math.log(2.0))]


def entropy_error(server: LlamaServer, prompts: int, max_tokens: int) -> dict[str, Any]:
    """Bounds from top_logprobs 5 and 20 against the exact entropy on the server's own greedy tokens.

    Each completion prompt is sent to the server with ``logprobs`` 5 and 20 (greedy); the bounds are
    what the proxy computes from the response. The server's tokens are then fed (teacher forcing) to
    two references that see the whole vocabulary: llama.cpp in process (``generate_one(forced=...)``:
    the server's own kernels and weights, so the bounds must hold exactly) and the transformers
    backend (the same GGUF dequantised to float32: the exact entropy as ``corevital run`` reports it).
    """
    from corevital.capture.gguf import prepare_prompt
    from corevital.capture.llama_cpp import generate_one
    from corevital.capture.records import generation_record
    from corevital.config import load_settings
    from corevital.pipeline import Pipeline
    from corevital.proxy.llama_cpp import LlamaCppRunner

    settings = load_settings(
        {"backend": "llama-cpp", "chat_template": "off", "max_new_tokens": max_tokens, "sink": ["local"]}
    )
    runner = LlamaCppRunner(settings, threads=1)
    llm = runner.model.llm
    vocabulary: dict[str, list[int]] = {}
    for i in range(runner.model.vocab_size):
        vocabulary.setdefault(llm.detokenize([i]).decode("utf-8", errors="ignore"), []).append(i)
    pipeline = Pipeline(load_settings({"chat_template": "off"}))
    loaded = pipeline.loaded
    refs = ("llama_cpp", "transformers")
    errors: dict[tuple[int, str], dict[str, list[float]]] = {
        (k, ref): {"lower": [], "upper": [], "midpoint": []} for k in (5, 20) for ref in refs
    }
    surprisal_gap: list[float] = []
    steps = {5: 0, 20: 0}
    unmapped = 0
    try:
        for prompt in COMPLETION_PROMPTS[:prompts]:
            record = prepare_prompt(runner.model, prompt, settings)
            for k in (5, 20):
                body = {
                    "prompt": prompt,
                    "max_tokens": max_tokens,
                    "temperature": 0.0,
                    "seed": 0,
                    "logprobs": k,
                }
                response = httpx.post(server.url + COMPLETIONS, json=body, timeout=600).json()
                capture = capture_response(
                    response, ObservedRequest(prompt=prompt, chat=False), topk=5, mass_k=10, vocab_size=VOCAB
                )
                (choice,) = capture.choices
                stats = capture.stats[0]
                ids = _token_ids([t.token for t in choice.tokens], vocabulary)
                if ids is None or not ids:
                    unmapped += 1
                    continue
                forced = generate_one(
                    runner.model,
                    record,
                    generation_record(settings),
                    topk=settings.topk,
                    mass_k=settings.topk_mass_k,
                    forced=ids,
                )
                exact = {
                    "llama_cpp": [float(x) for x in forced.logits.entropy],
                    "transformers": _exact_entropy_transformers(loaded, list(record.token_ids), ids),
                }
                if k == 20:  # the server's chosen-token surprisal against the forced run's: same tokens?
                    server_bits = [
                        math.nan if t.logprob is None else -t.logprob / math.log(2.0) for t in choice.tokens
                    ]
                    surprisal_gap += [
                        abs(a - b) for a, b in zip(server_bits, forced.chosen.surprisal, strict=True)
                    ]
                steps[k] += len(ids)
                for ref in refs:
                    for step, truth in enumerate(exact[ref]):
                        errors[(k, ref)]["lower"].append(truth - float(stats.entropy_lower[step]))
                        errors[(k, ref)]["upper"].append(float(stats.entropy_upper[step]) - truth)
                        # the tier's estimate (the bounds' midpoint); signed, "outside" is meaningless
                        errors[(k, ref)]["midpoint"].append(truth - float(stats.entropy[step]))
    finally:
        runner.close()
        pipeline.close()

    def describe(values: list[float]) -> dict[str, float | None]:
        arr = np.array(values) if values else np.array([math.nan])
        return {
            "mean": float(arr.mean()),
            "p50": float(np.percentile(arr, 50)),
            "p95": float(np.percentile(arr, 95)),
            "max": float(arr.max()),
            "min": float(arr.min()),
            "outside_bound": int((arr < 0).sum()),
        }

    return {
        "prompts": prompts,
        "max_tokens": max_tokens,
        "steps": steps,
        "responses_not_mapped_to_ids": unmapped,
        "server_vs_forced_surprisal_bits_max": max(surprisal_gap) if surprisal_gap else None,
        **{
            f"top_logprobs_{k}_vs_{ref}": {
                "exact_minus_lower_bits": describe(v["lower"]),
                "upper_minus_exact_bits": describe(v["upper"]),
                "exact_minus_midpoint_bits": describe(v["midpoint"]),
            }
            for (k, ref), v in errors.items()
        },
    }


def upstream_down(server: LlamaServer, proxy: ProxyProcess) -> dict[str, Any]:
    server.stop()
    answers = []
    for i in range(4):
        path, body = request_body(i, 8)
        response = httpx.post(proxy.url + path, json=body, timeout=60)
        kind = None
        with contextlib.suppress(ValueError, KeyError, TypeError):
            kind = response.json()["error"]["type"]
        answers.append([response.status_code, kind])
    alive_while_down = proxy.process.poll() is None
    restarted = LlamaServer(server.model, n_ctx=1024, threads=1, port=server.port).start()
    try:
        path, body = request_body(1, 8)
        after = httpx.post(proxy.url + path, json=body, timeout=600).status_code
    finally:
        restarted.stop()
    return {"answers_while_down": answers, "proxy_alive": alive_while_down, "status_after_restart": after}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--entropy-prompts", type=int, default=10)
    parser.add_argument("--skip-entropy", action="store_true")
    parser.add_argument("--entropy-only", action="store_true", help="only the entropy estimate (no proxy)")
    parser.add_argument("--json", metavar="FILE", help="Also write the figures here.")
    args = parser.parse_args()

    out = Path(tempfile.mkdtemp(prefix="proxy-engine-"))
    model = locate_default_model().path
    figures: dict[str, Any] = {"commit": _commit(), "load_average_start": os.getloadavg()}
    if args.entropy_only:
        with LlamaServer(model, n_ctx=1024, threads=1) as server:
            figures["entropy"] = entropy_error(server, args.entropy_prompts, args.max_tokens)
        figures["load_average_end"] = os.getloadavg()
        text = json.dumps(figures, indent=2)
        print(text)
        if args.json:
            Path(args.json).write_text(text + "\n")
        worst = [
            v["exact_minus_lower_bits"]["outside_bound"] + v["upper_minus_exact_bits"]["outside_bound"]
            for key, v in figures["entropy"].items()
            if key.endswith("_vs_llama_cpp")
        ]
        return 0 if sum(worst) == 0 else 1
    with LlamaServer(model, n_ctx=1024, threads=1) as server:
        proxy = ProxyProcess(server.url, out, vocab_size=VOCAB)
        try:
            run = traffic(server, proxy, args)
            figures["errors"] = errors(server, proxy)
            if not args.skip_entropy:
                figures["entropy"] = entropy_error(server, args.entropy_prompts, args.max_tokens)
            figures["upstream_down"] = upstream_down(server, proxy)
        finally:
            printed = proxy.stop()
    results = run["results"]
    observed = sum(1 for r in results if r["status"][1] == 200)
    after_restart = 1 if figures["upstream_down"]["status_after_restart"] == 200 else 0
    reports = stored_reports(out / "corevital.db")
    latency = LATENCY.search(printed)
    figures.update(
        requests=len(results),
        streaming=sum(1 for r in results if r["stream"]),
        identical=sum(1 for r in results if r["identical"]),
        identical_with_logprobs=sum(1 for r in results if r["identical"] and r["asked_logprobs"]),
        asked_logprobs=sum(1 for r in results if r["asked_logprobs"]),
        reports_stored=len(reports),
        reports_expected=observed + after_restart,
        wall_s=run["wall_s"],
        end_to_end_s={
            "direct_p50": percentile([r["direct_s"] for r in results], 0.5),
            "proxy_p50": percentile([r["proxy_s"] for r in results], 0.5),
            "paired_difference_p50": percentile([r["proxy_s"] - r["direct_s"] for r in results], 0.5),
        },
        proxy_added_ms=(
            {
                "per_request_p50": float(latency.group(1)),
                "per_request_p95": float(latency.group(2)),
                "requests": int(latency.group(3)),
                "per_chunk_p50": float(latency.group(4)),
                "per_chunk_p95": float(latency.group(5)),
                "chunks": int(latency.group(6)),
            }
            if latency
            else {"unparsed": printed[-500:]}
        ),
        proxy_exit_lines=printed.strip().splitlines()[-3:],
        load_average_end=os.getloadavg(),
        different=[r["i"] for r in results if not r["identical"]],
    )
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    ok = (
        figures["identical"] == len(results)
        and figures["reports_stored"] == figures["reports_expected"]
        and all(e["identical"] for e in figures["errors"])
    )
    print(f"statistics: median time direct {statistics.median(r['direct_s'] for r in results):.3f} s")
    return 0 if ok else 1


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
