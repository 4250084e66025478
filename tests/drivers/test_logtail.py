"""The last lines of a host log, read from its end only."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubevisor.drivers import logtail
from kubevisor.drivers.libvirt import diagnostics


def test_tail_gives_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "vm.log"
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    assert logtail.tail(log, 3) == "line 7\nline 8\nline 9\n"
    assert logtail.tail(log, 100).count("\n") == 10
    assert logtail.tail(log, 0) == ""


def test_tail_reads_no_more_than_its_limit_and_drops_the_cut_line(tmp_path: Path) -> None:
    log = tmp_path / "vm.log"
    log.write_bytes(b"first-very-long-line\n" + b"a\nb\n\xff\n")
    # 8 bytes from the end start inside "first-very-long-line": that piece is dropped.
    assert logtail.tail(log, 10, max_bytes=8) == "a\nb\n\N{REPLACEMENT CHARACTER}\n"


def test_tail_of_no_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        logtail.tail(tmp_path / "none.log", 5)


@pytest.mark.parametrize(
    ("uri", "wanted"),
    [
        pytest.param("qemu:///system", Path("/var/log/libvirt/qemu"), id="qemu-system"),
        pytest.param("lxc:///", Path("/var/log/libvirt/lxc"), id="lxc"),
        pytest.param("qemu:///session", None, id="session-logs-elsewhere"),
        pytest.param("qemu+tcp://10.0.0.2/system", None, id="remote"),
        pytest.param("test:///default", None, id="test-driver"),
    ],
)
def test_default_log_dir(uri: str, wanted: Path | None) -> None:
    assert diagnostics.default_log_dir(uri) == wanted
