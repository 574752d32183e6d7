"""JSON through CPython's C accelerator, ``_json``, without importing the ``json`` package.

``json`` loads ``re``, ``enum``, ``functools`` and ``collections`` for its pure-Python parts:
~5 ms, an eighth of an ``ocitool-runtime run``, which engines start several times per
container. The runtime needs only what ``json`` hands to ``_json`` anyway: strict decoding,
and encoding without indentation. On malformed input the ``json`` package is imported after
all, to raise its usual error.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from typing import Any

_WHITESPACE = " \t\n\r"  # JSON's insignificant whitespace
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _DecoderSettings:
    """What ``_json.make_scanner`` reads: ``json.JSONDecoder``'s defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


_scan = _json.make_scanner(_DecoderSettings())


def loads(data: str | bytes) -> Any:
    """``json.loads`` of a document (bytes are UTF-8, with or without a byte-order mark)."""
    if isinstance(data, (bytes, bytearray)):  # the UTF-8 codec is built in: nothing to load after pivot_root
        text = bytes(data[3:] if data.startswith(b"\xef\xbb\xbf") else data).decode()
    else:
        text = data
    start = len(text) - len(text.lstrip(_WHITESPACE))
    # _json raises StopIteration where no value starts, and reports malformed input through
    # json.decoder, which is not loaded (a SystemError then): either way json says what is wrong.
    try:
        value, end = _scan(text, start)
    except Exception:  # noqa: BLE001
        end = -1
    if end == -1 or text[end:].strip(_WHITESPACE):
        import json  # its error (a ValueError) says what is wrong, and where
        return json.loads(text)
    return value


def dumps(value: Any, *, compact: bool = False, sort_keys: bool = False) -> str:
    """``json.dumps(value)`` (``compact``: with the separators ``(",", ":")``)."""
    encode = _json.make_encoder({}, _unserializable, _json.encode_basestring_ascii, None,
                                ":" if compact else ": ", "," if compact else ", ", sort_keys, False, True)
    return "".join(encode(value, 0))


def _unserializable(value: Any) -> None:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")
