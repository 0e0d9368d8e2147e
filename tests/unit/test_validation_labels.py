"""The labelled-record format, its loader's one-line errors, and the shipped labelled set."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from corevital.errors import InputError
from corevital.validation.answers import check_answer
from corevital.validation.labels import LabelledRecord, load_labelled

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "examples" / "validation" / "qa_labelled.jsonl"


def write(path: Path, *lines: Any) -> Path:
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
        encoding="utf-8",
    )
    return path


# --- the record model ---------------------------------------------------------------------------
def test_minimal_record_defaults() -> None:
    rec = LabelledRecord.model_validate({"id": "x", "prompt": "Capital of France?", "answer": "Paris"})
    assert rec.group == "x"
    assert rec.match == "exact" and rec.mode == "exact"
    assert rec.split is None and rec.task is None and rec.accepted is None
    assert rec.prompt_text == "Capital of France?"


def test_messages_record() -> None:
    rec = LabelledRecord.model_validate(
        {
            "id": "m",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"}],
            "answer": 4,
            "group": "g",
        }
    )
    assert rec.messages is not None and rec.messages[1].role == "user"
    assert rec.prompt_text == "Be brief.\n2 + 2?"
    assert rec.mode == "numeric" and rec.group == "g"


def test_numeric_and_failed_records() -> None:
    assert LabelledRecord.model_validate(
        {"id": "n", "prompt": "p", "answer": "12", "match": "numeric"}
    ).mode == ("numeric")
    rec = LabelledRecord.model_validate({"id": "f", "prompt": "p", "failed": True, "split": "dev"})
    assert rec.failed is True and rec.answer is None


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"prompt": "p", "answer": "a"}, "id"),
        ({"id": "", "prompt": "p", "answer": "a"}, "id"),
        ({"id": "x", "answer": "a"}, "exactly one of 'prompt' or 'messages'"),
        (
            {"id": "x", "prompt": "p", "messages": [{"role": "user", "content": "c"}], "answer": "a"},
            "exactly one",
        ),
        ({"id": "x", "prompt": "p"}, "exactly one of 'answer' or 'failed'"),
        ({"id": "x", "prompt": "p", "answer": "a", "failed": False}, "exactly one of 'answer' or 'failed'"),
        ({"id": "x", "prompt": "p", "failed": True, "accepted": ["a"]}, "'accepted' is only allowed"),
        ({"id": "x", "prompt": "p", "failed": True, "match": "exact"}, "'match' is only allowed"),
        ({"id": "x", "prompt": "p", "failed": "yes"}, "failed"),
        ({"id": "x", "prompt": "p", "answer": True}, "answer"),
        ({"id": "x", "prompt": "p", "answer": "a", "match": "fuzzy"}, "match"),
        ({"id": "x", "prompt": "p", "answer": "a", "colour": "red"}, "colour"),
        ({"id": "x", "prompt": "p", "answer": "ten-ish", "match": "numeric"}, "is not a number"),
        ({"id": "x", "prompt": "p", "answer": 3, "accepted": ["three", "a few"]}, "is not a number"),
        ({"id": "x", "prompt": "p", "answer": "..."}, "empty once normalised"),
        ({"id": "x", "prompt": "p", "answer": float("nan")}, "finite"),
        ({"id": "x", "messages": [{"role": "user"}], "answer": "a"}, "content"),
        ({"id": "x", "messages": [], "answer": "a"}, "messages"),
    ],
)
def test_invalid_records(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        LabelledRecord.model_validate(data)


# --- the loader ---------------------------------------------------------------------------------
def test_load_and_split(tmp_path: Path) -> None:
    path = write(
        tmp_path / "l.jsonl",
        {"id": "a", "prompt": "p1", "answer": "x", "split": "dev"},
        "",
        "   ",
        {"id": "b", "prompt": "p2", "answer": 2, "split": "test"},
        {"id": "c", "prompt": "p3", "failed": True, "split": "test"},
    )
    assert [r.id for r in load_labelled(path)] == ["a", "b", "c"]
    assert [r.id for r in load_labelled(path, split="test")] == ["b", "c"]
    assert [r.id for r in load_labelled(str(path), split="dev")] == ["a"]


def _error(path: Path, **kwargs: Any) -> str:
    with pytest.raises(InputError) as info:
        load_labelled(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_loader_errors_name_file_and_line(tmp_path: Path) -> None:
    good = {"id": "a", "prompt": "p", "answer": "x"}
    bad_json = write(tmp_path / "j.jsonl", good, '{"id": "b", "prompt": ')
    assert _error(bad_json).startswith(f"{bad_json}:2: invalid JSON")

    not_object = write(tmp_path / "o.jsonl", good, "", "[1, 2]")
    assert _error(not_object) == f"{not_object}:3: expected a JSON object, got list"

    schema = write(tmp_path / "s.jsonl", good, {"id": "b", "prompt": "p"})
    message = _error(schema)
    assert message.startswith(f"{schema}:2: ") and "exactly one of 'answer' or 'failed'" in message

    extra = write(tmp_path / "e.jsonl", {**good, "anwser": "typo"})
    message = _error(extra)
    assert message.startswith(f"{extra}:1: anwser: ") and "Extra inputs are not permitted" in message

    duplicate = write(tmp_path / "d.jsonl", good, {"id": "b", "prompt": "q", "answer": "y"}, good)
    assert _error(duplicate) == f"{duplicate}:3: duplicate id 'a' (first on line 1)"


def test_loader_empty_missing_and_unknown_split(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n", encoding="utf-8")
    assert _error(empty) == f"{empty}: no labelled records (the file is empty)"

    missing = tmp_path / "missing.jsonl"
    assert _error(missing).startswith(f"{missing}: cannot read labelled file")

    path = write(tmp_path / "l.jsonl", {"id": "a", "prompt": "p", "answer": "x", "split": "dev"})
    assert _error(path, split="tset") == f"{path}: unknown split 'tset' (splits in the file: dev)"
    nosplit = write(tmp_path / "n.jsonl", {"id": "a", "prompt": "p", "answer": "x"})
    assert _error(nosplit, split="dev") == f"{nosplit}: unknown split 'dev' (splits in the file: none)"


def dump_labelled(records: list[LabelledRecord], path: Path) -> None:
    """Records as JSONL, leaving out unset optional fields (and a group equal to the id)."""
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            data = record.model_dump(exclude_none=True, exclude_defaults=True)
            if data.get("group") == record.id:
                del data["group"]
            handle.write(json.dumps(data, ensure_ascii=False) + "\n")


def test_dump_round_trip(tmp_path: Path) -> None:
    records = [
        LabelledRecord.model_validate(
            {"id": "a", "prompt": "p", "answer": "x", "accepted": ["y"], "match": "contains"}
        ),
        LabelledRecord.model_validate({"id": "b", "prompt": "q", "answer": 3, "group": "g", "split": "dev"}),
        LabelledRecord.model_validate(
            {"id": "c", "messages": [{"role": "user", "content": "hi"}], "failed": False}
        ),
    ]
    path = tmp_path / "out.jsonl"
    dump_labelled(records, path)
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert first == {"id": "a", "prompt": "p", "answer": "x", "accepted": ["y"], "match": "contains"}
    assert load_labelled(path) == records


# --- the shipped set ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped() -> list[LabelledRecord]:
    return load_labelled(SHIPPED)


def test_shipped_set_loads_with_unique_ids(shipped: list[LabelledRecord]) -> None:
    assert len(shipped) >= 2300
    assert len({r.id for r in shipped}) == len(shipped)
    tasks = ("arithmetic", "factual", "comparison", "sequence", "calendar", "conversion", "spelling", "words")
    assert all(r.split in ("dev", "test") and r.task in tasks for r in shipped)
    assert all(r.answer is not None for r in shipped)
    # group is written out on every line (not left to default)
    for line in SHIPPED.read_text(encoding="utf-8").splitlines():
        assert {"group", "task", "split"} <= set(json.loads(line))


def test_shipped_splits(shipped: list[LabelledRecord]) -> None:
    sizes = Counter(r.split for r in shipped)
    assert set(sizes) == {"dev", "test"}
    assert min(sizes.values()) >= 1100
    per_task = Counter((r.task, r.split) for r in shipped)
    for task in {r.task for r in shipped}:
        assert abs(per_task[(task, "dev")] - per_task[(task, "test")]) <= 0.1 * per_task[(task, "dev")]
    splits_of: defaultdict[str, set[str | None]] = defaultdict(set)
    for r in shipped:
        splits_of[r.group].add(r.split)
    assert all(len(splits) == 1 for splits in splits_of.values()), "a group straddles the splits"
    assert [r.id for r in load_labelled(SHIPPED, split="dev")] == [r.id for r in shipped if r.split == "dev"]


def test_shipped_answers_are_recognised(shipped: list[LabelledRecord]) -> None:
    """A bare correct answer, and the sentence a chat model gives, both count as correct."""
    for r in shipped:
        assert check_answer(str(r.answer), r), r.id
        if r.mode == "contains":
            assert check_answer(f"The answer to that is {r.answer}.", r), r.id
        if r.task == "arithmetic":
            assert r.mode == "numeric"
            assert check_answer(f"{r.prompt_text.split()[2]} and more = {r.answer}", r), r.id
