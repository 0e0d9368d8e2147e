"""A tensor-parallel model (transformers' ``tp_plan="auto"``) observed on two CPU processes (gloo).

The test runs this module under ``torchrun --nproc-per-node 2`` (see :func:`_worker`): each rank
loads the same tiny random Llama sharded over both processes (4 attention heads: 2 per rank) and
generates inside ``monitor.watch`` with a local sink. The reports are compared with those of the
same model in one process, and the collectives that CoreVital's reduction made are checked for
size: per window of steps a few numbers per layer and row plus one per local head, never the
attention weights (which grow with the keys) nor the hidden states.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from corevital.capture.tensor_parallel import RULES, merge_field
from corevital.metrics.attention import summarize_attention
from corevital.metrics.types import AttentionStats
from tests.support.tiny_models import EXPECTED, save_tiny_model

PROMPTS = (
    ["Hello there", "Why is the sky so blue today?"],
    ["A much longer prompt than the first one, with many more tokens to attend to", "Short"],
)
NEW_TOKENS = 4
TOLERANCE = 1e-4
# Values that may differ: times, ids, where the report went, and the fingerprint's correlation of
# entropy with margin, whose series are nearly constant on a random model (std ~1e-4), so 1e-7
# differences of the sharded logits' rounding move it by ~1e-3.
VOLATILE = (
    "summary.",
    "run_config.sink",
    "trace_id",
    "created_at_utc",
    "started_at_utc",
    "extensions.fingerprint.vector[20]",
)


def _generate(model: Any, tokenizer: Any, out: Path | None) -> list[dict[str, Any]]:
    from corevital import CoreVitalMonitor

    monitor = CoreVitalMonitor(capture="full", sink=None if out is None else "local", out=str(out or "runs"))
    reports: list[dict[str, Any]] = []
    for prompts in PROMPTS:
        with monitor.watch(model, tokenizer) as watcher:
            batch = tokenizer(prompts, return_tensors="pt", padding=True)
            model.generate(**batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
        reports.extend(report.model_dump(mode="json") for report in watcher.reports)
    monitor.close()
    return reports


def _worker(model_dir: str, out: str) -> None:
    """One rank: the sharded model's reports and the sizes of CoreVital's gathers, as JSON."""
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM, AutoTokenizer, DistributedConfig

    from corevital.capture import tensor_parallel

    sizes: list[int] = []
    gather = tensor_parallel.ShardGroup.gather

    def recorded(self: tensor_parallel.ShardGroup, tensors: Any) -> list[Any]:
        found = gather(self, tensors)
        sizes.extend(self.gathers[-1:] if tensors else [])
        return found

    tensor_parallel.ShardGroup.gather = recorded  # type: ignore[method-assign]  # counts, then calls through
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, distributed_config=DistributedConfig(tp_plan="auto"), attn_implementation="eager"
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    q_proj = model.model.layers[0].self_attn.q_proj.weight
    rank = dist.get_rank()
    reports = _generate(model, tokenizer, Path(out) / "store")
    facts = {"reports": reports, "gathers": sizes, "local_q_rows": int(q_proj.to_local().shape[0])}
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(facts))
    dist.destroy_process_group()


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    if any(path.lstrip(".").startswith(v) for v in VOLATILE):
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} vs {len(b)}"]
        return [
            d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}[{i}]")
        ]
    if isinstance(a, float) and isinstance(b, int | float):
        if math.isnan(a) and math.isnan(b):
            return []
        return [] if abs(a - b) <= TOLERANCE * max(1.0, abs(a)) else [f"{path}: {a} vs {b}"]
    return [] if a == b else [f"{path}: {str(a)[:60]} vs {str(b)[:60]}"]


def test_every_attention_statistic_has_a_rule_over_ranks() -> None:
    assert set(RULES) == {f.name for f in dataclasses.fields(AttentionStats)}


@pytest.mark.parametrize("with_nan", [False, True])
def test_statistics_of_two_halves_of_the_heads_merge_into_those_of_all_heads(with_nan: bool) -> None:
    import torch

    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 2, 8, 12, generator=generator) * 3.0  # [L, N, H, K]
    weights = logits.softmax(dim=-1)
    if with_nan:
        weights[1, 0, 6, 4] = math.nan  # a head of the second rank
    visible = torch.ones(1, 2, 12, dtype=torch.bool)
    visible[0, 1, :3] = False  # the second row's first keys are padding
    whole = summarize_attention(weights, visible, causal=True)
    halves = [
        summarize_attention(part, visible, causal=True) for part in (weights[:, :, :4], weights[:, :, 4:])
    ]
    for f in dataclasses.fields(AttentionStats):
        merged = merge_field(RULES[f.name], torch.stack([getattr(half, f.name) for half in halves]))
        expected = getattr(whole, f.name)
        assert merged.dtype == expected.dtype, f.name
        torch.testing.assert_close(merged, expected, atol=1e-6, rtol=1e-6, equal_nan=True, msg=f.name)


def _torchrun(*arguments: str) -> list[str]:
    with socket.socket() as probe:  # a free port for the ranks' rendezvous on 127.0.0.1
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"),
        *("--master-addr", "127.0.0.1", "--master-port", str(port), *arguments),
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}


@pytest.mark.slow
def test_two_gloo_processes_give_the_single_process_report_once(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = tmp_path / "llama"
    save_tiny_model("llama", model_dir)
    torch.manual_seed(0)
    single = _generate(
        AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager"),
        AutoTokenizer.from_pretrained(model_dir),
        None,
    )
    command = _torchrun("-m", "tests.integration.test_tensor_parallel", str(model_dir), str(tmp_path))
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    shape = EXPECTED["llama"]
    assert ranks[0]["local_q_rows"] == shape.hidden_size // 2  # really sharded: half the heads each
    for facts in ranks:
        assert len(facts["reports"]) == len(single) == 4
        for sharded, alone in zip(facts["reports"], single, strict=True):
            assert sharded["generated"]["token_ids"] == alone["generated"]["token_ids"]
            assert _differences(sharded, alone) == []
        # Each layer's per-head vector has all 4 heads, in the single process's order.
        layer = facts["reports"][0]["timeline"][1]["layers"][0]["attention_summary"]
        assert len(layer["max_weight_per_head"]) == shape.num_heads

    stored = sorted((tmp_path / "store").rglob("*.json"))
    assert len(stored) == len(single)  # one report per sequence, written by rank 0 only
    ids = {json.loads(p.read_text())["trace_id"] for p in stored}
    assert ids == {report["trace_id"] for report in ranks[0]["reports"]}

    # What crossed between the ranks: per generation one gather for the prompt's per-head attention
    # (a capped list of its strongest weights per head) and one for the decoding window (every
    # step's reduced per-row values: one number per scalar field and one per local head, for each
    # layer and row), in that order. The window's size follows from layers x rows x steps alone,
    # below the hidden states of those steps; the prompt's is the same for a short and a 48-token
    # prompt, far below that prompt's attention weights (layers x rows x local heads x P x P).
    layers, heads, rows = shape.num_layers, shape.num_heads // 2, len(PROMPTS[0])
    window = NEW_TOKENS * layers * rows * ((len(RULES) - 1) + heads)
    gathers = ranks[0]["gathers"]
    assert gathers == ranks[1]["gathers"]
    assert gathers[1::2] == [window, window]
    assert window < NEW_TOKENS * layers * rows * shape.hidden_size
    longest = max(report["prompt"]["num_tokens"] for report in ranks[0]["reports"][2:])
    assert gathers[0] == gathers[2] < layers * rows * heads * longest**2


@pytest.mark.slow
def test_corevital_run_under_torchrun_stores_each_report_once_and_rank_1_stays_silent(tmp_path: Path) -> None:
    model_dir = tmp_path / "llama"
    save_tiny_model("llama", model_dir)
    arguments = ("run", "--model", str(model_dir), "--tp-plan", "auto", "--temperature", "0")
    command = _torchrun(
        *("-m", "corevital", *arguments, "--max-new-tokens", "3", "--out", str(tmp_path / "runs")),
        *("--prompt", "Hello there", "--prompt", "Why is the sky blue?", "--quiet", "--json"),
    )
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = json.loads(done.stdout)  # rank 0's summaries only: rank 1 prints nothing
    assert len(summaries) == 2
    from corevital.sinks.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "runs" / "corevital.db", read_only=True)
    try:
        rows = store.list()
    finally:
        store.close()
    assert sorted(row.trace_id for row in rows) == sorted(s["trace_id"] for s in summaries)


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
