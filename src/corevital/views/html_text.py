"""Text and numbers for the HTML report: every string from a model or a prompt goes through :func:`esc`.

:func:`esc` shows invisible and dangerous characters as escapes (ESC as ``\\x1b``, a right-to-left
override as ``\\u202e``, a lone surrogate as ``\\ud800``) and then HTML-escapes the result, so a
token can neither inject markup nor reorder or hide the text around it, and the page always
encodes as UTF-8.
"""

from __future__ import annotations

import html
import unicodedata

from corevital.views.lenient import finite

# Unicode format characters that reorder or hide text (bidirectional controls, marks).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _escaped(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _needs_escape(ch: str) -> bool:
    if ch in _BIDI:
        return True
    category = unicodedata.category(ch)
    return category in ("Cc", "Cs", "Zl", "Zp")  # controls, lone surrogates, line/paragraph separators


def show_controls(text: str, *, keep: str = "") -> str:
    """``text`` with control characters written as escapes; the characters in ``keep`` stay."""
    if text.isprintable() and not any(ch in _BIDI for ch in text):
        return text
    return "".join(_escaped(ch) if ch not in keep and _needs_escape(ch) else ch for ch in text)


def esc(text: object, *, keep: str = "") -> str:
    """HTML text (also safe in a quoted attribute) of a string from a model, a prompt or a report."""
    return html.escape(show_controls(str(text), keep=keep), quote=True)


def token_label(text: str) -> str:
    """A token as shown in the text: a newline as ``↵`` followed by a line break, a tab as ``→``."""
    shown = show_controls(text, keep="\n\t")
    return html.escape(shown.replace("\n", "\u21b5\n").replace("\t", "\u2192\t"), quote=True)


def quoted(text: str) -> str:
    """A token for a tooltip: quoted, every control character escaped (a newline as ``\\x0a``)."""
    return esc(f"\u201c{text}\u201d")


def fmt(value: object, digits: int = 3) -> str:
    """A number for people: ``digits`` significant digits, ``–`` when missing."""
    number = finite(value)
    if number is None:
        return "\u2013"
    if number == 0:
        return "0"
    if abs(number) >= 1e7 or abs(number) < 1e-3:
        return f"{number:.{max(digits - 1, 1)}e}"
    if abs(number) >= 10**digits:
        return f"{number:.0f}"
    return f"{number:.{digits}g}"
