"""Capabilities: parsing ``process.capabilities`` and applying it to a real process.

Everything that changes privileges runs in a forked child (``in_child``, ``exec_in_child``)
so the pytest process keeps its own capabilities.
"""

from __future__ import annotations

import logging
import os

import pytest

from ocitool.errors import OcitoolError
from ocitool.runtime import syscalls
from support.fork import exec_in_child, in_child
from ocitool.runtime.capabilities import (
    CAPABILITIES,
    CapabilitySets,
    apply_capabilities,
    current_capabilities,
    drop_bounding,
    keep_caps_for_setuid,
    last_cap,
    parse_capabilities,
)

BUSYBOX = "/bin/busybox"
NOBODY = 65534


def mask(*names: str) -> int:
    return sum(1 << CAPABILITIES[name] for name in names)


def numbers(*names: str) -> frozenset[int]:
    return frozenset(CAPABILITIES[name] for name in names)


def collect_warnings() -> list[str]:
    """The messages the capabilities module logs from now on (for use in a child)."""
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("ocitool.runtime.capabilities").addHandler(handler)
    return records


def status_masks(text: str) -> dict[str, int]:
    """CapInh/CapPrm/... masks from /proc/<pid>/status text."""
    return {field: int(value, 16) for field, _, value in
            (line.partition(":\t") for line in text.splitlines()) if field.startswith("Cap")}


def test_names_and_numbers_are_the_kernels() -> None:
    assert CAPABILITIES["CAP_CHOWN"] == 0
    assert CAPABILITIES["CAP_SETPCAP"] == 8
    assert CAPABILITIES["CAP_SYS_ADMIN"] == 21
    assert CAPABILITIES["CAP_SYS_RESOURCE"] == 24
    assert CAPABILITIES["CAP_CHECKPOINT_RESTORE"] == 40
    assert sorted(CAPABILITIES.values()) == list(range(41))
    assert last_cap() >= 40
    assert current_capabilities()["bounding"].bit_length() - 1 <= last_cap()


def test_last_cap_without_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    """A container's init may have no /proc: the kernel is probed instead."""
    expected = last_cap()

    def no_proc(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("no /proc")

    monkeypatch.setattr("builtins.open", no_proc)
    assert last_cap() == expected


def test_current_capabilities_agrees_with_capget() -> None:
    caps = current_capabilities()
    assert set(caps) == {"bounding", "effective", "permitted", "inheritable", "ambient"}
    assert syscalls.capget() == (caps["effective"], caps["permitted"], caps["inheritable"])
    assert current_capabilities(os.getpid()) == caps


def test_parse_maps_names_to_numbers_and_missing_sets_to_empty() -> None:
    caps = parse_capabilities({"bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_KILL"],
                               "permitted": ["CAP_KILL", "CAP_KILL"]})
    assert caps == CapabilitySets(bounding=numbers("CAP_CHOWN", "CAP_KILL"),
                                  effective=numbers("CAP_KILL"), permitted=numbers("CAP_KILL"))
    assert parse_capabilities(None) == CapabilitySets()


@pytest.mark.parametrize("config, message", [
    ({"bounding": ["CAP_CHOWN", "CAP_FOO"]},
     'process.capabilities.bounding[1]: unknown capability "CAP_FOO"'),
    ({"ambient": ["chown"]}, 'process.capabilities.ambient[0]: unknown capability "chown"'),
    ({"effective": "CAP_CHOWN"}, "process.capabilities.effective: must be an array"),
    ({"permitted": [21]}, "process.capabilities.permitted[0]: must be a string"),
    ({"efective": []}, 'process.capabilities: unknown capability set "efective"'),
    (["CAP_CHOWN"], "process.capabilities: must be an object"),
])
def test_parse_rejects_bad_config(config: object, message: str) -> None:
    with pytest.raises(OcitoolError) as raised:
        parse_capabilities(config)  # type: ignore[arg-type]
    assert message in str(raised.value)


def test_unavailable_capability_is_skipped_with_a_warning() -> None:
    """A cap outside the runtime's own bounding set (CAP_SYS_RESOURCE on the dev host) is
    dropped with a warning, as runc does; the child removes it first to be host-independent."""
    def work() -> dict:
        syscalls.prctl(syscalls.PR_CAPBSET_DROP, CAPABILITIES["CAP_SYS_RESOURCE"])
        records = collect_warnings()
        caps = parse_capabilities({"bounding": ["CAP_CHOWN", "CAP_SYS_RESOURCE"],
                                   "permitted": ["CAP_SYS_RESOURCE"]})
        return {"bounding": sorted(caps.bounding), "permitted": sorted(caps.permitted),
                "warnings": records}

    result = in_child(work)
    assert result["bounding"] == [CAPABILITIES["CAP_CHOWN"]]
    assert result["permitted"] == []
    assert len(result["warnings"]) == 1 and "CAP_SYS_RESOURCE" in result["warnings"][0]


def test_apply_as_root_sets_every_set() -> None:
    config = {
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "effective": ["CAP_CHOWN", "CAP_KILL"],
        "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_KILL"],
        "ambient": ["CAP_KILL"],
    }

    def work() -> dict[str, int]:
        apply_capabilities(parse_capabilities(config))
        return current_capabilities()

    caps = in_child(work)
    assert caps == {
        "bounding": mask("CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"),
        "effective": mask("CAP_CHOWN", "CAP_KILL"),
        "permitted": mask("CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"),
        "inheritable": mask("CAP_KILL"),
        "ambient": mask("CAP_KILL"),
    }


def test_drop_bounding_alone() -> None:
    caps = CapabilitySets(bounding=numbers("CAP_SETPCAP", "CAP_CHOWN"))

    def work() -> dict[str, int]:
        drop_bounding(caps)
        drop_bounding(caps)  # nothing left to drop: must not fail
        return current_capabilities()

    after = in_child(work)
    assert after["bounding"] == mask("CAP_SETPCAP", "CAP_CHOWN")
    assert after["effective"] == current_capabilities()["effective"]  # only the bounding set


def test_non_root_user_keeps_ambient_caps_across_exec() -> None:
    """The init's order: drop bounding, keep caps, setuid, apply; ambient survives execve."""
    caps = CapabilitySets(
        bounding=numbers("CAP_NET_BIND_SERVICE", "CAP_NET_RAW"),
        effective=numbers("CAP_NET_BIND_SERVICE"), permitted=numbers("CAP_NET_BIND_SERVICE"),
        inheritable=numbers("CAP_NET_BIND_SERVICE"), ambient=numbers("CAP_NET_BIND_SERVICE"))

    def become_nobody() -> None:
        drop_bounding(caps)
        keep_caps_for_setuid()
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        keep_caps_for_setuid(False)
        apply_capabilities(caps)

    code, output = exec_in_child(become_nobody, [BUSYBOX, "grep", "^Cap", "/proc/self/status"])
    assert code == 0, output
    wanted = mask("CAP_NET_BIND_SERVICE")
    assert status_masks(output) == {"CapInh": wanted, "CapPrm": wanted, "CapEff": wanted,
                                    "CapBnd": mask("CAP_NET_BIND_SERVICE", "CAP_NET_RAW"),
                                    "CapAmb": wanted}


def test_setuid_without_keep_caps_loses_permitted() -> None:
    """Why keep_caps_for_setuid exists: without it capset cannot grant anything."""
    caps = CapabilitySets(effective=numbers("CAP_CHOWN"), permitted=numbers("CAP_CHOWN"),
                          bounding=numbers("CAP_CHOWN"))

    def work() -> None:
        drop_bounding(caps)
        os.setuid(NOBODY)
        apply_capabilities(caps)

    with pytest.raises(OcitoolError, match="process.capabilities: cannot set"):
        in_child(work)


def test_ambient_that_cannot_be_raised_is_a_warning() -> None:
    caps = CapabilitySets(bounding=numbers("CAP_KILL"), effective=numbers("CAP_KILL"),
                          permitted=numbers("CAP_KILL"), ambient=numbers("CAP_KILL"))

    def work() -> dict:
        records = collect_warnings()
        apply_capabilities(caps)  # CAP_KILL is not inheritable, so it cannot be ambient
        return {"ambient": current_capabilities()["ambient"], "warnings": records}

    result = in_child(work)
    assert result["ambient"] == 0
    assert any("CAP_KILL" in message for message in result["warnings"])
