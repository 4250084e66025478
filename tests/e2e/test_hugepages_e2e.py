"""A huge-page VM for real: 2 MiB pages the machine reserves (`vm.nr_hugepages`), a host
with a hugetlbfs of its own (`start_hosts(hugepages=True)`), pages used outside
kubevisor counted as used by placement, and the guest's memory backed by huge pages in
the live domain. docs/hugepages.md says how the machine is set up."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import eventually
from stacks import ExtraHost, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.apiserver, pytest.mark.libvirtd]

NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")
RESERVED = 100
"""2 MiB pages this test reserves on the machine (200 MiB), given back afterwards."""
LABEL = {"kubevisor.io/hugetlbfs": "yes"}
GUEST_PAGES = 64
"""The guest's 128Mi in 2 MiB pages."""


@pytest.fixture
def hugepage_host(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExtraHost]:
    """A host whose libvirt has a hugetlbfs, on a machine with RESERVED more 2 MiB pages.
    Ask for it before `namespace`, so the namespace's VMs go while its agent runs."""
    before = int(NR_HUGEPAGES.read_text())
    NR_HUGEPAGES.write_text(f"{before + RESERVED}\n")
    extra = ExtraHost(stack, tmp_path_factory.mktemp("hugepage-host"), hugepages=True)
    try:
        assert int(NR_HUGEPAGES.read_text()) == before + RESERVED, (
            "the kernel could not reserve the pages (memory too fragmented?)"
        )
        extra.start()
        stack.kubectl("label", "hvh", extra.name, *(f"{k}={v}" for k, v in LABEL.items()))
        yield extra
    finally:
        extra.remove()
        NR_HUGEPAGES.write_text(f"{before}\n")


def reported_pages(stack: Stack, host: str) -> tuple[int, int]:
    """(total, free) 2 MiB pages of the host's cell 0, as its agent last reported them."""
    cells = (stack.get("hvh", host).get("status") or {}).get("numaCells") or []
    pools = [p for p in cells[0].get("hugepages") or [] if p["pageSize"] == "2Mi"] if cells else []
    return (pools[0]["total"], pools[0]["free"]) if pools else (0, 0)


def report_again(stack: Stack, host: str, generation: int) -> None:
    """Make the agent register its host again now: it does on a spec change (polled with
    its heartbeat), and its status carries the huge pages libvirt counts free then."""
    patch = {"spec": {"reserved": {"disk": f"{generation}Mi"}}}
    stack.kubectl("patch", "hvh", host, "--type=merge", "-p", json.dumps(patch))


def virsh(extra: ExtraHost, *args: str) -> str:
    assert extra.host is not None
    done = subprocess.run(["virsh", "-c", extra.host.uri, *args], capture_output=True, text=True)
    assert done.returncode == 0, f"virsh {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def in_host(extra: ExtraHost, *argv: str) -> None:
    """Run a command in the host's mount namespace, where its hugetlbfs is mounted."""
    assert extra.host is not None and extra.host.pid is not None
    done = subprocess.run(
        ["nsenter", "-t", str(extra.host.pid), "-m", *argv], capture_output=True, text=True
    )
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"


def test_a_huge_page_vm_runs_on_pages_nobody_else_uses(
    stack: Stack, hugepage_host: ExtraHost, namespace: str
) -> None:
    extra = hugepage_host
    assert extra.host is not None
    host, hugetlbfs = extra.name, extra.host.hugetlbfs
    total, free = eventually(
        lambda: reported_pages(stack, host)[1] >= RESERVED and reported_pages(stack, host),
        what=f"{host} reporting at least {RESERVED} free 2Mi pages",
    )

    # Something outside kubevisor takes all but 60 of the free pages: 64 no longer fit.
    outside = free - 60
    in_host(extra, "fallocate", "-l", f"{outside * 2}M", str(hugetlbfs / "outside"))
    report_again(stack, host, 1)
    eventually(lambda: reported_pages(stack, host) == (total, 60), what=f"{host} reporting 60 free")
    stack.apply(
        namespace,
        {
            "apiVersion": "kubevisor.io/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {"name": "huge"},
            "spec": {
                "memory": {"size": "128Mi", "hugepages": {"pageSize": "2Mi"}},
                "placement": {"hostSelector": LABEL},
            },
        },
    )
    waiting = stack.wait_phase(namespace, "huge", "Unschedulable")
    scheduled = next(c for c in waiting["status"]["conditions"] if c["type"] == "Scheduled")
    assert (
        "1 insufficient 2Mi huge pages (need 128Mi, best has 120Mi free)" in (scheduled["message"])
    ), scheduled["message"]

    # The pages come back: the VM is placed there and runs on them.
    in_host(extra, "rm", str(hugetlbfs / "outside"))
    report_again(stack, host, 2)
    running = stack.wait_phase(namespace, "huge", "Running", timeout=120)
    assert running["status"]["host"] == host
    (cell,) = running["status"]["placement"]["cells"]
    assert cell["hugepages"] == {"pageSize": "2Mi", "count": GUEST_PAGES}

    uid = running["metadata"]["uid"]
    live = ET.fromstring(virsh(extra, "dumpxml", uid))
    page = live.find("memoryBacking/hugepages/page")
    assert page is not None, ET.tostring(live, encoding="unicode")
    assert (page.get("size"), page.get("unit")) == ("2048", "KiB")
    numatune = live.find("numatune/memory")
    assert numatune is not None and numatune.get("nodeset") == str(cell["hostCell"])
    # The kernel's count: the guest's pages are taken.
    counted = virsh(extra, "freepages", "--cellno", "0", "--pagesize", "2048")
    assert counted == f"2048KiB: {free - GUEST_PAGES}", counted
    report_again(stack, host, 3)
    eventually(
        lambda: reported_pages(stack, host) == (total, free - GUEST_PAGES),
        what=f"{host} reporting {free - GUEST_PAGES} free 2Mi pages with the guest running",
    )
