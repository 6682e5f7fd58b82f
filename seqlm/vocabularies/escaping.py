"""Reversible escaping of codes, texts and kinds into token strings.

Token strings may hold no whitespace (the saved HF tokenizer splits on it) and no
control character, and two different source codes must never give one token. So a
token part is written with:

- a space as `▁` (SentencePiece's word mark: MEDS codes such as `LAB//x//mg/dL per
  day` stay readable);
- `\\` as `\\\\`, a literal `▁` as `\\u2581`, and every other whitespace or control
  character (tab, newline, `\\x1c`-`\\x1f`, no-break space ...) as `\\xHH` / `\\uHHHH`;
- structural look-alikes escaped where they would be read as structure: a `[` opening
  the token or a `//` segment (so no code spells `[PAD]`, `[TIME//5m]` or `X//[UNK]`)
  becomes `\\x5b`; a final segment `//Q<k>` that could be a value bin (k from 1 to the
  scheme's `value_bins`, written without a leading zero) and a leading `VALUE//Q` have
  their `Q` written as `\\x51`, so the code `A//Q3` and the code `A` with bin 3 differ,
  while ICD-10 codes such as `DIAGNOSIS//ICD//10//Q620` stay as they are;
- a whole segment that spells one of seqlm's marker words (`UNK`, `PAD`, `BOS`, `EOS`,
  `SEP`) has its first letter hex-escaped: MIMIC's unit `UNK` gives
  `LAB//224650//\\x55NK`, which no reader takes for seqlm's `[UNK]` (issue 20).

Every escape starts with a backslash and every source backslash is doubled, so
`unescape_part(escape_part(s)) == s` for every string `s`.
"""

from __future__ import annotations

import re
import unicodedata

import polars as pl

SPACE_MARK = "▁"
ESCAPE = "\\"


def _needs_hex(char: str) -> bool:
    # Python's isspace (which counts \x1c-\x1f) and Unicode's White_Space (what the HF
    # WhitespaceSplit and Rust's regex use) differ; escaping both and every control
    # character leaves nothing either side would split on or choke on.
    return char != " " and (char.isspace() or unicodedata.category(char) == "Cc")


def _hex_escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# Every character escaped by value (all in the Basic Multilingual Plane).
_HEX_CHARS: tuple[str, ...] = tuple(chr(c) for c in range(0x10000) if _needs_hex(chr(c)))
_PATTERNS: list[str] = [ESCAPE, SPACE_MARK, " ", *_HEX_CHARS]
_REPLACEMENTS: list[str] = [ESCAPE + ESCAPE, "\\u2581", SPACE_MARK] + [
    _hex_escape(c) for c in _HEX_CHARS
]
# A `[` opening a `//` segment is escaped in the same pass as the characters (a literal
# pattern); one opening the part by an anchored regex. An unanchored regex over every
# string would cost more than all the character escapes together.
_PATTERNS += ["//["]
_REPLACEMENTS += ["//\\x5b"]
_VALUE_PREFIX = "VALUE//Q"
# The words of seqlm's special tokens ([UNK], [PAD], ...): a source segment spelling one
# reads as seqlm's marker even without the brackets.
MARKER_WORDS: tuple[str, ...] = ("UNK", "PAD", "BOS", "EOS", "SEP")
# Value bins a scheme may have by default (TokenScheme.value_bins).
DEFAULT_MAX_BIN = 10
_UNESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4})|▁")


def escaped_chars(expr: pl.Expr) -> pl.Expr:
    """Character escapes and segment-opening brackets of one part (a code or a text)."""
    # An anchored regex tries one position only, so it stays cheap.
    return expr.str.replace_many(_PATTERNS, _REPLACEMENTS).str.replace(r"^\[", "\\x5b")


def escaped_text(expr: pl.Expr) -> pl.Expr:
    """A text value as the last part of a `CODE//text` token: `escaped_chars`, and no
    `//` and no leading `/` left in it (`/` as `\\x2f`), so the text part is always what
    follows the token's last `//`: two (code, text) pairs never give one token."""
    return (
        escaped_chars(expr).str.replace_all("//", "/\\x2f", literal=True).str.replace("^/", "\\x2f")
    )


def _bin_lookalike(max_bin: int) -> str:
    """A final `//Q<k>` with k in 1..max_bin as written by `value_token` (no leading 0)."""
    numbers = "|".join(str(k) for k in range(max_bin, 0, -1))
    return f"//Q({numbers})$"


def escaped_marker_words(expr: pl.Expr) -> pl.Expr:
    """A segment spelling a marker word, first letter hex-escaped (`UNK` -> `\\x55NK`).
    Twice, because `UNK//UNK` shares the `//` between two matches."""
    for word in MARKER_WORDS:
        pattern = f"(^|//){word}(//|$)"
        # `$` is the only special character of a polars (Rust regex) replacement
        replacement = "${1}" + _hex_escape(word[0]) + word[1:] + "${2}"
        expr = expr.str.replace_all(pattern, replacement).str.replace_all(pattern, replacement)
    return expr


def escaped_structure(expr: pl.Expr, max_bin: int = DEFAULT_MAX_BIN) -> pl.Expr:
    """The whole base's escapes (after `escaped_chars` of its parts): a leading
    `VALUE//Q`, a final bin look-alike and marker-word segments; `max_bin` is the largest
    bin the scheme has."""
    expr = expr.str.replace(f"^{_VALUE_PREFIX}", "VALUE//\\x51")
    expr = expr.str.replace(_bin_lookalike(max_bin), "//\\x51${1}")
    return escaped_marker_words(expr)


def escaped(expr: pl.Expr, max_bin: int = DEFAULT_MAX_BIN) -> pl.Expr:
    """A whole token part (a code, or a kind) escaped, as a polars expression."""
    return escaped_structure(escaped_chars(expr), max_bin)


def escape_part(text: str, max_bin: int = DEFAULT_MAX_BIN) -> str:
    """`escaped` for one Python string (the same polars code, so the two never differ)."""
    return pl.select(escaped(pl.lit(text, dtype=pl.String), max_bin)).item()


def unescape_part(text: str) -> str:
    """The source string of an escaped part: the exact inverse of `escape_part`."""

    def replace(match: re.Match[str]) -> str:
        escape = match.group(1)
        if escape is None:
            return " "
        if escape == ESCAPE:
            return ESCAPE
        return chr(int(escape[1:], 16))

    return _UNESCAPE.sub(replace, text)
