"""The config file's TOML: the quick reader for simple files must agree with tomllib, or step aside."""

from __future__ import annotations

import random
import re
import tomllib

import pytest

from ocitool.config import load_config, read_simple_toml
from ocitool.errors import ConfigError

README_EXAMPLE = """\
[registries."docker.io"]
mirrors = ["127.0.0.1:5000"]      # tried in order before the registry itself

[registries."registry.example:5000"]
insecure = true                    # plain HTTP and unverified TLS allowed
"""

# Lines a config may hold, in and beyond what the quick reader handles, valid TOML and not.
FRAGMENTS = [
    "", "# a comment", "  # indented comment", "#\x01 control character", "\ufeff# byte-order mark",
    '[registries."docker.io"]', "[registries.plain]", "[ registries . 'literal' ]", "[[registries]]",
    '[registries."docker.io".extra]', "[registries]", '[registries."a b"]  # comment', "[a.b]", "[a]",
    'mirrors = ["127.0.0.1:5000", "m.example"]', 'mirrors = ["a",]', "mirrors = []", "mirrors = [1, 2]",
    'mirrors = ["a" "b"]', 'mirrors = [\n"a"]', "insecure = true", "insecure = false", "insecure = True",
    'insecure = "yes"', 'b = "x"', 'b = "with \\"escape\\""', "b = 'literal'", 'b = "#not a comment"#one',
    'b = "a,]"', '"quoted key" = "v"', "dotted.key = true", "= true", "b =", 'b = "x" trailing', "b = 1",
    'b = """multi"""', "b = { inline = true }", '\tb\t=\t"tabs"\t', "b = true\r",
]


def reference(text: str) -> dict | None:
    """What tomllib makes of ``text``; None when it is not TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None


def test_the_documented_config_is_read_without_tomllib():
    assert read_simple_toml(README_EXAMPLE) == tomllib.loads(README_EXAMPLE)


@pytest.mark.parametrize("text, quick", [
    ("", True),
    ('[registries."a"]\n[registries."a"]\n', False),        # a table twice: tomllib's error
    ('[a.b]\n[a]\nc = "d"\n', True),                        # a parent defined after its child
    ('[a]\nb = "x"\n[a.b]\n', False),                       # a table over a value
    ('x = true\nx = false\n', False),                       # a key twice
    ('[registries."x"]\r\nmirrors = ["y"]\r\n', True),      # CRLF line ends
    ("[a]\nb = 'x'\n", False),                              # literal strings are left to tomllib
])
def test_quick_reader_agrees_or_steps_aside(text, quick):
    quick_result = read_simple_toml(text)
    assert (quick_result is not None) == quick
    if quick:
        assert quick_result == tomllib.loads(text)


def test_random_files_agree_with_tomllib():
    """Whatever lines a file combines, the quick reader returns tomllib's result or None, and never
    accepts what tomllib rejects."""
    chooser = random.Random(20261124)
    accepted = 0
    for _ in range(3000):
        text = "\n".join(chooser.choice(FRAGMENTS) for _ in range(chooser.randint(1, 6))) + "\n"
        quick = read_simple_toml(text)
        if quick is not None:
            accepted += 1
            assert quick == reference(text), repr(text)
    assert accepted > 300  # the quick path is really exercised


def test_load_config_falls_back_to_tomllib_and_reports_errors(tmp_path):
    inline = tmp_path / "inline.toml"
    inline.write_text('registries = { "docker.io" = { mirrors = ["m.example"] } }\n')
    assert read_simple_toml(inline.read_text()) is None
    assert load_config(str(inline)).registry("docker.io").mirrors == ("m.example",)
    broken = tmp_path / "broken.toml"
    broken.write_text('[registries."docker.io"\nmirrors = ["m"]\n')
    with pytest.raises(ConfigError, match=re.escape(f"cannot read config file {broken}")):
        load_config(str(broken))
