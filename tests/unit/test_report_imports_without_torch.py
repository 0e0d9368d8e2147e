"""``report/`` and ``sinks/`` import with numpy and pydantic only: torch is made unimportable."""

from __future__ import annotations

import os
import subprocess
import sys

PROGRAM = """
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
sys.modules["transformers"] = None
import corevital.report, corevital.report.json_schema, corevital.report.legacy
import corevital.sinks, corevital.sinks.sqlite, corevital.sinks.local, corevital.sinks.migrate
print("ok")
"""


def test_report_and_sinks_import_without_torch() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
