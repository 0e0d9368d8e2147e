"""`--rag-context FILE`: retrieval metadata in `extensions.rag`, and the context span's attention share."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from corevital.cli import main
from tests.support.cli import newest_report, run_args
from tests.support.values import present

PROMPT = "Context: the lighthouse was built in 1854 on the northern cape. Question: when was it built?"


def _run(capsys: pytest.CaptureFixture[str], model: str, out: Path, rag: Path) -> tuple[int, str]:
    code = main(
        [
            *run_args(model, out),
            "--prompt",
            PROMPT,
            "--max_new_tokens",
            "5",
            "--rag-context",
            str(rag),
        ]
    )
    return code, capsys.readouterr().err


def test_rag_metadata_and_context_share_reach_the_report(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_model_dir: Callable[[str], Path]
) -> None:
    rag = tmp_path / "rag.json"
    rag.write_text(
        json.dumps(
            {
                "context_token_count": 20,
                "retrieved_doc_ids": ["doc-7"],
                "retrieved_doc_titles": ["Lighthouses of the north"],
                "retrieval_metadata": {"retriever": "bm25", "k": 1},
                "context_span": [1, 21],
            }
        )
    )
    code, err = _run(capsys, str(tiny_model_dir("llama")), tmp_path, rag)
    assert code == 0, err
    report = newest_report(tmp_path / "corevital.db")
    stored = present(report.extensions.rag)
    assert stored.retrieved_doc_ids == ["doc-7"] and stored.retrieval_metadata == {
        "retriever": "bm25",
        "k": 1,
    }
    assert stored.context_span == [1, 21]
    assert stored.context_attention_share is not None and 0.0 <= stored.context_attention_share <= 1.0


def test_a_bad_rag_file_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_model_dir: Callable[[str], Path]
) -> None:
    rag = tmp_path / "rag.json"
    rag.write_text('{"context_span": [5, 2]}')
    code, err = _run(capsys, str(tiny_model_dir("llama")), tmp_path, rag)
    assert code == 2 and err.strip().count("\n") == 0 and "context_span" in err
    rag.write_text("{not json")
    code, err = _run(capsys, str(tiny_model_dir("llama")), tmp_path, rag)
    assert code == 2 and "not valid JSON" in err
