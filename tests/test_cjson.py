"""Tests for ocitool.cjson: the same results and errors as the json package."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from ocitool import cjson

REPO = Path(__file__).resolve().parents[1]

DOCUMENTS = [
    {"ociVersion": "1.0.2", "process": {"args": ["sh", "-c", "echo \u00e9 \"q\" \\ \n"], "env": [], "terminal": False},
     "n": [0, -1, 2 ** 70, 1.5, -0.0, 1e-9, None, True], "empty": {}, "list": [], "nested": [[{"a": [{}]}]]},
    [], "text", 0, 3.25, None, False, "\u2603 \U0001f600",
]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_round_trips_like_json(document):
    for compact, separators in ((False, None), (True, (",", ":"))):
        text = cjson.dumps(document, compact=compact, sort_keys=True)
        assert text == json.dumps(document, separators=separators, sort_keys=True)
        assert cjson.loads(text) == json.loads(text) == document
        assert cjson.loads(f" \n\t{text}\r\n ".encode()) == document
    assert cjson.dumps(document) == json.dumps(document)


def test_bytes_with_a_byte_order_mark_and_constants():
    assert cjson.loads(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}
    assert math.isnan(cjson.loads("NaN")) and cjson.loads("[-Infinity]") == [float("-inf")]


@pytest.mark.parametrize("text", ["", "  ", "{", '{"a": 1,}', '{"a": 1} x', "[1] [2]", "nul", '"\x01"', "{'a': 1}"])
def test_malformed_input_raises_jsons_error(text):
    with pytest.raises(ValueError) as ours:
        cjson.loads(text)
    with pytest.raises(ValueError) as theirs:
        json.loads(text)
    assert str(ours.value) == str(theirs.value)


def test_unserializable_values_raise_type_error():
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        cjson.dumps({"a": {1}})


def test_works_without_the_json_package_loaded():
    """The runtime's case: json is imported only to report malformed input."""
    code = ("import sys; from ocitool import cjson; "
            "assert cjson.loads(cjson.dumps({'a': [1]})) == {'a': [1]} and 'json' not in sys.modules; "
            "cjson.loads('{ nope')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == \
        "json.decoder.JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 3 (char 2)"
