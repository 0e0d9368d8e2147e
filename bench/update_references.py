"""Add per-layer update-ratio references to a calibration profile from fault-free suite runs.

The shipped profile (``src/corevital/configs/calibration/smollm2-135m-instruct.json``) was fitted
before the update ratio existed, so its layers had no ``log_update_ratio``. This script reads the
signals that ``bench/validation_suite.py`` stored (``signals.pkl``), keeps the fault-free runs of the
suite's ``factual`` kind (greedy, the same model), builds each layer's reference the way
``corevital calibrate`` does (``ProfileBuilder``: per-run medians over steps of ln u, then their
statistics across runs) and writes only ``layers[].log_update_ratio`` into the profile; everything
else in it (levels, buckets, the labelled risk model) is left as it is.

    .venv/bin/python bench/update_references.py --signals .bench-out/faults_mlp/signals.pkl \\
        --profile src/corevital/configs/calibration/smollm2-135m-instruct.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from validation_suite import cache_key, read_cache  # noqa: E402

from corevital.analysis.calibration.builder import ProfileBuilder  # noqa: E402
from corevital.analysis.calibration.profile import load_calibration_profile  # noqa: E402
from corevital.validation.suite_items import build_suite  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=Path, required=True)
    parser.add_argument("--profile", type=Path, required=True)
    parser.add_argument("--kind", default="factual", help="the fault-free suite kind to take runs from")
    args = parser.parse_args(argv)

    captured = read_cache(args.signals)
    shipped = load_calibration_profile(args.profile)
    builder = ProfileBuilder(shipped.model, shipped.generation)
    used = 0
    for item in build_suite():
        if item.kind == args.kind and item.fault is None and cache_key(item) in captured:
            builder.add(captured[cache_key(item)][1])
            used += 1
    if not used:
        print(f"no fault-free {args.kind} runs in {args.signals}", file=sys.stderr)
        return 1
    built = builder.finish(created_at_utc="references", corevital_version="references")
    data = json.loads(args.profile.read_text(encoding="utf-8"))
    for layer, ref in zip(data["layers"], built.layers, strict=True):
        stats = ref.log_update_ratio
        layer["log_update_ratio"] = None if stats is None else stats.model_dump(mode="json")
    args.profile.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    load_calibration_profile(args.profile)  # still a valid profile
    print(f"log_update_ratio of {used} fault-free {args.kind} runs written into {args.profile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
