"""Every fenced code block of README.md and docs/*.md runs as written (tests/support/doc_blocks.py says how).

Test ids are ``docs/library.md:123`` (the line of the opening fence). A document's python blocks share
one namespace and its blocks run in document order, on tiny random models that stand for the
models the documents name; blocks marked ``<!-- doc-run: real-model -->`` run on the real default
model (slow), blocks marked ``<!-- doc-run: skip (reason) -->`` are skipped with that reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.doc_blocks import (
    DATA_LANGS,
    SHELL_LANGS,
    Block,
    DocWorld,
    all_blocks,
    build_hub,
    parse,
    seed_store,
)

BLOCKS = all_blocks()


def _param(block: Block) -> object:
    marks = [pytest.mark.slow] if block.mode == "real-model" else []
    return pytest.param(block, id=block.id, marks=marks)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_hub(tmp_path_factory.mktemp("doc-hub"))


@pytest.fixture(scope="module")
def store(hub: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return seed_store(tmp_path_factory.mktemp("doc-store"), hub)


@pytest.fixture(scope="module")
def world(
    hub: Path, store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[Block], DocWorld]]:
    """One world per document (and per document for its real-model blocks), made on first use."""
    worlds: dict[tuple[str, bool], DocWorld] = {}

    def get(block: Block) -> DocWorld:
        key = (block.doc, block.mode == "real-model")
        if key not in worlds:
            worlds[key] = DocWorld(tmp_path_factory.mktemp("doc-world"), hub, real_model=key[1], store=store)
        return worlds[key]

    yield get
    for made in worlds.values():
        made.close()


def test_markers_and_fences_are_well_formed(capsys: pytest.CaptureFixture[str]) -> None:
    problems = [f"{b.id}: {b.problem}" for b in BLOCKS if b.problem]
    assert not problems, "\n".join(problems)
    skipped = [b for b in BLOCKS if b.mode == "skip"]
    real = [b for b in BLOCKS if b.mode == "real-model"]
    unchecked = [b for b in BLOCKS if b.lang == "text"]
    with capsys.disabled():  # shown in every run's output, not only on failure
        print(
            f"\ndoc blocks: {len(BLOCKS)} in all, {len(skipped)} skipped, {len(real)} on the real model, "
            f"{len(unchecked)} text (output, not run)"
        )
        for block in skipped:
            print(f"  skipped {block.id}: {block.reason}")
    assert len(BLOCKS) > 40  # the parser found the documents' blocks


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_doc_block(block: Block, world: Callable[[Block], DocWorld]) -> None:
    if block.problem:
        pytest.fail(block.problem)
    if block.mode == "skip":
        pytest.skip(f"doc-run skip: {block.reason}")
    if block.lang == "text":
        return
    place = world(block)
    if block.lang == "python":
        place.run_python(block)
    elif block.lang in SHELL_LANGS:
        result = place.run_shell(block)
        assert result.rc == 0, (
            f"exit {result.rc} after {len(result.commands)} corevital command(s); last: "
            f"{result.commands[-1:]}\n--- stdout\n{result.stdout[-3000:]}"
            f"\n--- stderr\n{result.stderr[-3000:]}"
        )
    else:
        assert block.lang in DATA_LANGS
        place.check_data(block)


def test_the_parser_reads_markers_and_refuses_bad_ones(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "\n".join(
            [
                "# t",
                "<!-- doc-run: skip (needs a GPU) -->",
                "```bash",
                "nvidia-smi",
                "```",
                "<!-- doc-run: real-model -->",
                "```python",
                "x = 1",
                "```",
                "<!-- doc-run: skip -->",
                "```sh",
                "true",
                "```",
                "<!-- doc-run: later -->",
                "```python",
                "```",
                "```",
                "plain",
                "```",
                "  ```yaml",
                "  a: 1",
                "  ```",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    blocks = parse(doc, tmp_path)
    assert [(b.line, b.lang, b.mode, b.reason) for b in blocks] == [
        (3, "bash", "skip", "needs a GPU"),
        (7, "python", "real-model", None),
        (11, "sh", "skip", None),
        (15, "python", "run", None),
        (17, "", "run", None),
        (20, "yaml", "run", None),
    ]
    assert [b.problem is None for b in blocks] == [True, True, False, False, False, True]
    assert blocks[0].body == "nvidia-smi\n" and blocks[5].body == "a: 1\n"
    assert blocks[0].id == "doc.md:3"


def test_the_monitor_takes_its_model_from_the_setting_as_the_cli_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hook the documents' python blocks rely on: ``CoreVitalMonitor()`` reads ``COREVITAL_MODEL``."""
    from corevital import CoreVitalMonitor

    monkeypatch.setenv("COREVITAL_MODEL", "gpt2")
    assert CoreVitalMonitor().settings_for().model == "gpt2"
    assert CoreVitalMonitor("default").settings_for().model == "default"  # an explicit model wins
    monkeypatch.delenv("COREVITAL_MODEL")
    assert CoreVitalMonitor().settings_for().model == "default"
