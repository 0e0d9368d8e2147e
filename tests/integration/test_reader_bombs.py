"""Peak memory of the readers given bombs (issue 17): a 1 MiB zlib bomb and a 1 MiB gzip bomb (1 GiB
of zeros each), JSON nested 100,000 deep and a 5,000-digit integer, given to ``SQLiteStore.get``,
``corevital migrate --from-db`` and ``load_report``, each in its own process whose peak RSS
(``VmHWM`` of /proc/self/status) must stay below the limit (256 MB) + 200 MB, with one-line errors and
the import going on to the good report.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

from corevital.report.limits import MAX_REPORT_BYTES
from corevital.sinks.sqlite import SQLiteStore
from tests.support.hostile import GOLDEN, deep_json, gzip_bomb, huge_integer_json, store_with_body, zlib_bomb
from tests.support.original_store import ORIGINAL_DDL

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PEAK_BOUND_KIB = (MAX_REPORT_BYTES + 200 * 1024 * 1024) // 1024
BOMB_MIB = 1024  # inflated size; about 1 MiB compressed


def _measured(code: str) -> dict[str, object]:
    """Run ``code`` (which sets ``out``, a dict) in a fresh interpreter; ``out`` plus its peak RSS."""
    script = textwrap.dedent(
        """
        import json, sys
        sys.path.insert(0, {repo!r})
        out = {{}}
        {code}
        # VmHWM: this process's own peak. ru_maxrss would also count the parent's resident size at
        # fork (Linux carries it across exec), which is pytest's, not the reader's.
        with open("/proc/self/status") as status:
            out["peak_kib"] = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
        print(json.dumps(out))
        """
    ).format(repo=str(REPO), code=textwrap.dedent(code))
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    print(f"peak RSS {result['peak_kib']} KiB (bound {PEAK_BOUND_KIB} KiB)")  # shown with -s
    return result


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    zbomb, gbomb = zlib_bomb(BOMB_MIB), gzip_bomb(BOMB_MIB)
    assert len(zbomb) < 1.1 * 2**20 and len(gbomb) < 1.1 * 2**20
    return {"zlib": zbomb, "gzip": gbomb}


def test_sqlite_get_of_bombs_deep_json_and_huge_integers_stays_under_the_memory_bound(
    tmp_path: Path, bombs: dict[str, bytes]
) -> None:
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    bodies = {
        "zlib-bomb": bombs["zlib"],
        "deep-json": zlib.compress(deep_json(100_000).encode()),
        "huge-integer": zlib.compress(huge_integer_json(5_000).encode()),
    }
    path = tmp_path / "corevital.db"
    from corevital.report.encoding import report_from_json

    with SQLiteStore(path) as store:
        for number in range(len(bodies)):
            document = {**golden, "trace_id": f"{number:08x}-0000-4000-8000-000000000000"}
            store.write(report_from_json(json.dumps(document)))
    for number, body in enumerate(bodies.values()):
        store_with_body(path, f"{number:08x}-0000-4000-8000-000000000000", body)
    result = _measured(
        f"""
        from corevital.errors import ReportError
        from corevital.sinks.sqlite import SQLiteStore
        store = SQLiteStore({str(path)!r}, read_only=True)
        for name, number in zip({list(bodies)!r}, range(3)):
            try:
                store.get(f"{{number:08x}}-0000-4000-8000-000000000000")
            except ReportError as error:
                out[name] = str(error)
        """
    )
    assert "inflates beyond 256 MB; refused" in str(result["zlib-bomb"])
    assert "nested deeper than 256 levels" in str(result["deep-json"])
    assert "more than 4300 digits" in str(result["huge-integer"])
    assert isinstance(result["peak_kib"], int) and result["peak_kib"] < PEAK_BOUND_KIB, result


def test_migrate_from_db_of_bombs_stays_under_the_memory_bound_and_goes_on(
    tmp_path: Path, bombs: dict[str, bytes]
) -> None:
    source = tmp_path / "original.db"
    conn = sqlite3.connect(source)
    conn.execute(ORIGINAL_DDL)
    rows = [
        ("a-zlib-bomb", None, bombs["zlib"]),
        ("b-gzip-bomb", None, bombs["gzip"]),
        ("c-deep", deep_json(100_000), None),
        ("d-huge", None, gzip.compress(huge_integer_json(5_000).encode())),
        ("e-integer-body", None, 10**13),
        ("f-good", None, gzip.compress(GOLDEN.read_bytes())),
    ]
    conn.executemany("INSERT INTO reports VALUES (?, 't', 'm', '0.4.0', ?, ?, NULL, NULL)", rows)
    conn.commit()
    conn.close()
    target = tmp_path / "target.db"
    result = _measured(
        f"""
        import contextlib, io
        from corevital.cli import main
        errors = io.StringIO()
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()) as output:
            out["exit"] = main(["migrate", "--from-db", {str(source)!r}, "--to-db", {str(target)!r}])
        out["stdout"] = output.getvalue()
        out["stderr"] = errors.getvalue()
        """
    )
    assert result["exit"] == 1
    assert result["stdout"] == "imported 1, skipped 0, failed 5\n"
    failures = str(result["stderr"]).splitlines()
    assert len(failures) == 5 and all(line.startswith("  failed: ") for line in failures)
    assert "inflates beyond 256 MB" in failures[0] and "inflates beyond 256 MB" in failures[1]
    assert isinstance(result["peak_kib"], int) and result["peak_kib"] < PEAK_BOUND_KIB, result
    with SQLiteStore(target, read_only=True) as store:
        assert store.count() == 1


def test_load_report_of_bombs_stays_under_the_memory_bound(tmp_path: Path, bombs: dict[str, bytes]) -> None:
    files = {
        "gzip-bomb": bombs["gzip"],
        "zlib-bomb": bombs["zlib"],
        "deep-json": deep_json(100_000).encode(),
        "huge-integer": huge_integer_json(5_000).encode(),
    }
    for name, data in files.items():
        (tmp_path / f"{name}.json").write_bytes(data)
    result = _measured(
        f"""
        from corevital.errors import ReportError
        from corevital.report.encoding import load_report
        for name in {list(files)!r}:
            try:
                load_report({str(tmp_path)!r} + "/" + name + ".json")
            except ReportError as error:
                out[name] = str(error)
        """
    )
    assert "inflates beyond 256 MB" in str(result["gzip-bomb"]) and "inflates beyond" in str(
        result["zlib-bomb"]
    )
    assert "nested deeper" in str(result["deep-json"]) and "4300 digits" in str(result["huge-integer"])
    assert isinstance(result["peak_kib"], int) and result["peak_kib"] < PEAK_BOUND_KIB, result
