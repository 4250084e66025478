"""hostinit's reading of the cgroup layout (the LXC host's workaround, docs/lxc.md)."""

from __future__ import annotations

import pytest

from kubevisor.testbed import hostinit

V1 = (
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
)
HYBRID = V1 + "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
V2 = "30 23 0:27 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
# A directory of that name with something else on it is not the hybrid layout.
TMPFS_NAMED_UNIFIED = V1 + "41 31 0:38 / /sys/fs/cgroup/unified rw - tmpfs none rw\n"


@pytest.mark.parametrize(
    ("mountinfo", "hybrid"),
    [
        pytest.param(HYBRID, True, id="hybrid-v1-plus-unified"),
        pytest.param(V1, False, id="pure-v1"),
        pytest.param(V2, False, id="pure-v2"),
        pytest.param(TMPFS_NAMED_UNIFIED, False, id="tmpfs-at-the-unified-path"),
        pytest.param("", False, id="empty"),
    ],
)
def test_hybrid_cgroup2_is_only_the_v2_hierarchy_beside_v1(mountinfo: str, hybrid: bool) -> None:
    assert hostinit.hybrid_cgroup2(mountinfo) is hybrid
