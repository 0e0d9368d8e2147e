"""Helpers shared by the command modules: reading prompt files, quieting library logs."""

from __future__ import annotations

import json
import logging

from corevital.errors import InputError


def read_prompts_file(path: str) -> list[str]:
    """The prompts of a file: one per line, or a JSON object with a string field ``prompt`` per
    line. Not UTF-8, binary (a NUL byte), unreadable or malformed: a one-line InputError."""
    from corevital.report.limits import check_json_text, read_text_file

    text = read_text_file(path, f"prompts file {path}", error=InputError)
    prompts: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("{"):
            check_json_text(stripped, f"{path}:{number}", error=InputError)
            try:
                record = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: invalid JSON line ({exc.msg})") from exc
            except (RecursionError, ValueError) as exc:
                raise InputError(f"{path}:{number}: invalid JSON line ({type(exc).__name__})") from exc
            prompt = record.get("prompt") if isinstance(record, dict) else None
            if not isinstance(prompt, str):
                raise InputError(f"{path}:{number}: a JSON line needs a string field 'prompt'")
            prompts.append(prompt)
        else:
            prompts.append(line)
    if not prompts:
        raise InputError(f"prompts file {path} holds no prompt")
    return prompts


def configure_logging(level: str) -> None:
    """Log at ``level``; below DEBUG, silence the progress bars and chatter of transformers.

    Only transformers' own switches are used (its GGUF de-quantisation bar follows them while
    capture loads a GGUF file); other libraries' progress bars are left alone. torch's loggers get
    the WARNING level torch gives them once its import ends: a run interrupted inside that import
    would otherwise print the INFO lines of torch's exit handlers (FakeTensor cache stats).
    """
    logging.basicConfig(level=getattr(logging, level), format="%(levelname)s %(name)s: %(message)s")
    if level == "DEBUG":
        return
    logging.getLogger("torch").setLevel(logging.WARNING)
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
