"""What the dashboard's run page is sent: series, signals with their steps, heat maps downsampled on
the server, and a lenient read of any stored document."""

from __future__ import annotations

import json
from typing import Any

from corevital.server.dashboard_view import MAX_COLUMNS, layer_view, read_document, run_view


def _step(index: int, *, prompt: bool = False, layers: int = 2) -> dict[str, Any]:
    return {
        "step_index": index,
        "token": {"token_id": index, "token_text": f"t{index}", "is_prompt_token": prompt},
        "logits_summary": {
            "entropy": float(index % 7),
            "surprisal": None if index == 2 else 1.0,
            "top_k_margin": 0.5,
            "topk_mass": 0.9,
            "topk_probs": [{"token_id": k, "token_text": f"a{k}", "prob": 0.1} for k in range(8)],
        },
        "layers": [
            {
                "layer_index": layer,
                "attention_summary": {"entropy_mean_normalized": 0.5, "collapsed_head_count": 1},
                "hidden_summary": {"l2_norm_mean": float(index + 1), "sketch": [0.0] * 16},
            }
            for layer in range(layers)
        ],
    }


def _document(steps: int) -> dict[str, Any]:
    return {
        "trace_id": "abc",
        "model": {"hf_id": "m", "num_layers": 2, "num_attention_heads": 4},
        "prompt": {"text": "p", "token_ids": [1, 2], "num_tokens": 2},
        "generated": {"output_text": "o", "token_ids": list(range(steps)), "num_tokens": steps},
        "timeline": [_step(0, prompt=True)] + [_step(i) for i in range(steps)],
        "health_flags": {"repetition_loop_detected": True},
        "extensions": {
            "repetition": {"detected": True, "first_step": 4, "repeated_text": "<b>x</b>"},
            "early_warning": {
                "firings": [{"signal": "margin_collapsed", "step": 7}, {"signal": "late", "step": 10**6}]
            },
            "compound_signals": [{"name": "c", "description": "d", "first_step": None}],
        },
    }


def test_run_view_series_tokens_and_signals() -> None:
    document = _document(12)
    view = run_view(read_document(json.dumps(document)))
    assert view["steps"] == 12  # the prompt token is left out
    assert view["series"]["surprisal"][2] is None and view["series"]["entropy"][3] == 3.0
    assert len(view["tokens"][0]["top"]) == 5
    assert view["tokens"][0]["text"] == "t0"
    markers = {(m["kind"], m["name"]): m["step"] for m in view["markers"]}
    assert markers == {
        ("flag", "repetition_loop"): 4,
        ("warning", "margin_collapsed"): 7,
        ("warning", "late"): None,  # beyond the run: not a step of it
        ("compound", "c"): None,
    }
    assert "heat_maps" not in view


def test_heat_maps_are_downsampled_on_the_server() -> None:
    steps = 3 * MAX_COLUMNS - 2  # blocks of 3 steps, the last one of 1
    view = layer_view(read_document(json.dumps(_document(steps)), layers=True))
    titles = [m["title"] for m in view["heat_maps"]]
    assert titles == ["Attention entropy", "Hidden-state norm", "Collapsed-head rate"]
    norm = view["heat_maps"][1]
    assert norm["block"] == 3 and norm["log"] is True
    assert all(len(row) == MAX_COLUMNS for row in norm["rows"])
    assert norm["rows"][0][-1] == float(steps)  # the last block: step steps-1 alone
    assert norm["rows"][0][0] == 2.0  # the mean of the norms 1, 2, 3 of steps 0-2
    assert view["heat_maps"][2]["rows"][1][0] == 0.25  # 1 collapsed head of 4


def test_short_runs_keep_every_step() -> None:
    view = layer_view(read_document(json.dumps(_document(10)), layers=True))
    assert all(m["block"] == 1 and len(m["rows"][0]) == 10 for m in view["heat_maps"])


def test_any_document_is_read_leniently() -> None:
    document = _document(3)
    document["timeline"][1] = "not a step"
    document["timeline"][2]["layers"] = None
    view = run_view(read_document(json.dumps(document)))
    assert view["steps"] == 3
    assert layer_view(read_document(json.dumps(document), layers=True))["steps"] == 3
    assert run_view(read_document("[]"))["steps"] == 0
