"""TLS policy: verified by default, relaxed by --tls-verify=false or the config's ``insecure``."""

from __future__ import annotations

import shlex
import subprocess
import sys


def test_https_registry_verified_when_asked(ocitool, tls_registry):
    ref = f"{tls_registry.host}/library/busybox"
    refused = ocitool("pull", "--tls-verify=true", ref, check=False)
    assert refused.returncode != 0
    assert "certificate verify failed" in refused.stderr and "--tls-verify=false" in refused.stderr
    trusted = ocitool("pull", "--tls-verify=true", ref, env={"SSL_CERT_FILE": str(tls_registry.ca_path)})
    assert trusted.stdout.strip() == tls_registry.images["library/busybox:latest"].digest
    assert "SSL_CERT_FILE" in ocitool("pull", "--help").stdout  # and --help says so


def test_tls_verify_false_and_loopback_default_accept_self_signed(ocitool, tls_registry):
    ref = f"{tls_registry.host}/library/busybox"
    ocitool("pull", "--tls-verify=false", ref)
    ocitool("pull", ref)  # loopback registries are insecure by default, as in Docker


def test_config_insecure_relaxes_a_named_registry(ocitool, tls_registry, tmp_path):
    """A registry reached by a non-loopback name is verified unless the config marks it insecure.

    The name resolves to 127.0.0.1 through an /etc/hosts bind-mounted in a private mount namespace.
    """
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost registry.ocitool.test\n")
    name = f"registry.ocitool.test:{tls_registry.host.split(':')[1]}"

    def pull() -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "ocitool", "--root", str(ocitool.root), "--config", str(config),
                   "pull", f"{name}/library/busybox"]
        script = f"mount --bind {hosts} /etc/hosts && exec {shlex.join(command)}"
        return subprocess.run(["unshare", "-m", "sh", "-c", script], env=ocitool.environment(),
                              capture_output=True, text=True, timeout=60)

    config = ocitool.write_config("")
    refused = pull()
    assert refused.returncode != 0 and "certificate verify failed" in refused.stderr
    config = ocitool.write_config(f'[registries."{name}"]\ninsecure = true\n')
    accepted = pull()
    assert accepted.returncode == 0, accepted.stderr
