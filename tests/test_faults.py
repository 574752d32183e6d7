"""A registry that drops connections, corrupts bytes, throttles or fails: pulls must cope or fail cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from support import images
from support.faultproxy import FaultProxy
from support.layout import assert_valid_layout, blob_digests
from support.push import push_image

BIG = images.big_random_image([3 * 1024 * 1024, 2 * 1024 * 1024], compression="none", seed=7)


@pytest.fixture(scope="module")
def big_image(registry):
    """A two-layer image of incompressible data (5 MiB), pushed once."""
    push_image(registry.url, "test/big", "latest", BIG)
    return BIG


def test_connection_cut_mid_blob_resumes_with_range(ocitool, registry, big_image):
    with FaultProxy(registry.url) as proxy:
        proxy.cut_blob_after = 1024 * 1024
        result = ocitool("pull", f"{proxy.host}/test/big")
        ranges = [h.get("Range") for m, p, h in proxy.requests_seen if "/blobs/" in p and h.get("Range")]
    assert result.stdout.strip() == big_image.digest
    assert ranges == ["bytes=1048576-"]
    assert_valid_layout(ocitool.root / "images")


def test_redirect_to_an_unusable_url_fails_at_once(ocitool, registry, big_image):
    """A Location with a space (or another scheme) is the registry's error, not a transient one."""
    with FaultProxy(registry.url) as proxy:
        proxy.redirect_blobs_to = "http://bad host"
        started = time.monotonic()
        result = ocitool("pull", f"{proxy.host}/test/big", check=False)
    assert result.returncode != 0 and "redirected to an unusable URL" in result.stderr, result.stderr
    assert "internal error" not in result.stderr and time.monotonic() - started < 10  # no retries


def test_flipped_bytes_are_rejected_and_nothing_stored(ocitool, registry, big_image):
    with FaultProxy(registry.url) as proxy:
        proxy.flip_blob_bytes = True
        result = ocitool("pull", f"{proxy.host}/test/big", check=False)
    assert result.returncode != 0
    assert "does not match its digest" in result.stderr
    store = ocitool.root / "images"
    assert assert_valid_layout(store) == {}
    assert blob_digests(store) == set()
    assert not list((store / ".ocitool" / "tmp").iterdir())


def test_429_then_success_honours_retry_after(ocitool, registry):
    with FaultProxy(registry.url) as proxy:
        proxy.status_queue = [(429, {"Retry-After": "1"}), (503, {})]
        start = time.monotonic()
        result = ocitool("pull", f"{proxy.host}/library/busybox")
        elapsed = time.monotonic() - start
    assert result.stdout.strip() == registry.images["library/busybox:latest"].digest
    assert elapsed >= 1.0


def test_500_forever_gives_up_in_bounded_time(ocitool, registry):
    with FaultProxy(registry.url) as proxy:
        proxy.always_status = 500
        start = time.monotonic()
        result = ocitool("pull", f"{proxy.host}/library/busybox", check=False)
        elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert "gave up after 5 attempts" in result.stderr and "HTTP 500" in result.stderr
    assert elapsed < 30
    assert len(proxy.requests_seen) == 5


def test_registry_down_is_a_clear_error(ocitool):
    from support.registry import free_port
    result = ocitool("pull", f"127.0.0.1:{free_port()}/library/busybox", check=False)
    assert result.returncode != 0
    assert "cannot reach" in result.stderr and "Connection refused" in result.stderr


def test_truncated_small_blob_is_resumed(ocitool, registry):
    """The config blob is read into memory; a cut there resumes like a layer does."""
    with FaultProxy(registry.url) as proxy:
        proxy.cut_blob_after = 10
        result = ocitool("pull", f"{proxy.host}/library/busybox")
    assert result.stdout.strip() == registry.images["library/busybox:latest"].digest


def test_two_concurrent_pulls_into_one_root(ocitool, registry):
    refs = [f"{registry.host}/library/busybox:latest", f"{registry.host}/test/whiteouts:latest",
            f"{registry.host}/test/zstd:latest", f"{registry.host}/test/multi:latest"]
    procs = [subprocess.Popen([sys.executable, "-m", "ocitool", "--root", str(ocitool.root), "pull", "-q", ref],
                              env=ocitool.environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for ref in refs]
    assert [p.wait(timeout=120) for p in procs] == [0] * len(refs)
    assert set(refs) <= set(assert_valid_layout(ocitool.root / "images"))


def test_pull_killed_midway_leaves_a_valid_store(ocitool, registry, big_image):
    ocitool("pull", f"{registry.host}/library/busybox")
    with FaultProxy(registry.url) as proxy:
        proxy.blob_delay = 0.01
        proc = subprocess.Popen([sys.executable, "-m", "ocitool", "--root", str(ocitool.root), "pull", "-q",
                                 f"{proxy.host}/test/big"], env=ocitool.environment(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        tmp = ocitool.root / "images" / ".ocitool" / "tmp"
        while not any(p.stat().st_size for p in tmp.glob("blob-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    refs = assert_valid_layout(ocitool.root / "images")
    assert list(refs) == [f"{registry.host}/library/busybox:latest"]
    assert list(tmp.iterdir())  # the killed pull's partial blob is there ...
    ocitool("gc")
    assert not list(tmp.iterdir())  # ... until gc removes it
    ocitool("pull", f"{registry.host}/test/big")
    assert len(assert_valid_layout(ocitool.root / "images")) == 2
