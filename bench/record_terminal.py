"""A terminal recording of ``corevital run`` on a batch of 8 prompts: tmux pane captures at intervals.

The run happens inside a detached tmux session of a fixed size (so rich sees a real terminal:
status line, live lines, batch table), and the pane is captured with ``tmux capture-pane -p -e -J``
(colours kept; a line the terminal wrapped is joined again, so an overflow shows as a long line)
every ``--interval`` seconds until the command exits. Frames that differ from the one before are
written to ``--out`` (ANSI colours kept, each frame headed by its time), and a plain-text copy
without the escape codes to ``--out`` with ``.txt`` appended, for reading and for the docs. Each
frame is checked: no line wider than the pane (but a line that is one path alone), no stray escape
or replacement characters. Needs tmux (Debian: ``apt-get install -y tmux``) and the default model.

    python bench/record_terminal.py                          # 120 columns, default model, 8 prompts
    python bench/record_terminal.py --width 80 --out /tmp/rec80.ansi
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PROMPTS = (
    "Explain why the sky is blue.",
    "Write a haiku about autumn rain.",
    "What is the capital of Australia?",
    "List three uses of a paperclip.",
    "Summarise the plot of Hamlet in one sentence.",
    "How do vaccines train the immune system?",
    "Translate 'good morning' into French and Spanish.",
    "Give one tip for writing clear code.",
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")


@dataclass(frozen=True)
class Frame:
    at_s: float
    ansi: str

    @property
    def plain(self) -> str:
        return _ANSI.sub("", self.ansi)


def problems(frame: Frame, width: int) -> list[str]:
    """What is wrong with a frame: lines wider than the pane, stray escapes, replacement characters."""
    found = []
    for number, line in enumerate(frame.plain.splitlines(), start=1):
        if len(line.rstrip()) > width and " " in line.strip():  # a lone path cannot be shortened
            found.append(f"line {number} is {len(line.rstrip())} columns wide (pane {width})")
        if "\x1b" in line or "\ufffd" in line:
            found.append(f"line {number} holds a stray escape or replacement character: {line!r}")
    return found


def tmux(*args: str) -> str:
    done = subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=30, check=True)
    return done.stdout


def record(command: str, *, width: int, height: int, interval: float, limit_s: float) -> list[Frame]:
    """Run ``command`` in a new tmux session and capture its pane until it exits (or ``limit_s``)."""
    session = f"corevital-rec-{int(time.time() * 1000) % 10**9}"
    marker = "corevital-recording-finished"
    # The pane stays open after the command so its last screen can be captured.
    shell = f"{command}; status=$?; echo; echo {marker} $status; sleep 600"
    tmux(
        "new-session", "-d", "-s", session, "-x", str(width), "-y", str(height), "bash", "--norc", "-c", shell
    )
    frames: list[Frame] = []
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < limit_s:
            screen = tmux("capture-pane", "-p", "-e", "-J", "-t", session)  # -J: wrapped lines joined
            now = time.perf_counter() - start
            if not frames or screen != frames[-1].ansi:
                frames.append(Frame(now, screen))
            if marker in screen:
                break
            time.sleep(interval)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, timeout=30)
    return frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--width", type=int, default=120)
    parser.add_argument("--height", type=int, default=40)
    parser.add_argument("--interval", type=float, default=0.5, help="Seconds between captures.")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--limit", type=float, default=900.0, help="Give up after this many seconds.")
    parser.add_argument("--out", type=Path, default=Path("runs/terminal-recording.ansi"))
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        print("tmux is not installed (Debian: apt-get install -y tmux)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="corevital-rec-") as tmp:
        prompts = Path(tmp) / "prompts.txt"
        prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
        command = shlex.join(
            [
                sys.executable,
                "-m",
                "corevital",
                "run",
                "--prompts-file",
                str(prompts),
                "--max_new_tokens",
                str(args.max_new_tokens),
                "--device",
                "cpu",
                "--sink",
                "local",
                "--out",
                str(Path(tmp) / "out"),
            ]
        )
        frames = record(
            command, width=args.width, height=args.height, interval=args.interval, limit_s=args.limit
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    bad = 0
    with (
        args.out.open("w", encoding="utf-8") as ansi,
        Path(f"{args.out}.txt").open("w", encoding="utf-8") as plain,
    ):
        for index, frame in enumerate(frames):
            head = f"--- frame {index} at {frame.at_s:.1f} s ({args.width}x{args.height}) ---\n"
            ansi.write(head + frame.ansi.rstrip("\n") + "\n")
            plain.write(
                head + "\n".join(line.rstrip() for line in frame.plain.rstrip("\n").splitlines()) + "\n"
            )
            for problem in problems(frame, args.width):
                bad += 1
                print(f"frame {index}: {problem}", file=sys.stderr)
    finished = bool(frames) and "corevital-recording-finished 0" in frames[-1].plain
    status = "exited 0" if finished else "did not finish"
    print(f"{len(frames)} frames in {args.out} and {args.out}.txt; command {status}")
    print(f"{bad} problems found in the frames")
    return 0 if finished and bad == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
