"""`kubevisor-agent --host NAME --libvirt-uri URI`: the node agent's process.

Reads its settings once from the command line, connects to the API server (a kubeconfig,
or the in-cluster service account) and to the hypervisor, and runs until SIGTERM/SIGINT.
The URI's scheme picks the driver: `vsphere://VCENTER[:PORT]/HOST` one ESXi host of a
vCenter (`--vsphere-credentials`), anything else libvirt.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from aiohttp import web
from prometheus_client import REGISTRY

from kubevisor import flags, metrics
from kubevisor.agent import diagnostics, imagefetch, probe, vmmetrics
from kubevisor.agent.agent import Agent, Settings
from kubevisor.api import quantity
from kubevisor.console import agentserver, tls
from kubevisor.console import protocol as console_protocol
from kubevisor.core import destinations, hostpaths, selffence
from kubevisor.core.domain.host import BootFiles, DomainType, IdRange
from kubevisor.drivers import kvm, vsphere
from kubevisor.drivers.base import Hypervisor
from kubevisor.drivers.hostnet.linux import LinuxHostNetwork
from kubevisor.drivers.libvirt import LibvirtHypervisor
from kubevisor.drivers.libvirt import diagnostics as libvirt_diagnostics
from kubevisor.drivers.libvirt import migration as libvirt_migration
from kubevisor.kube.client import Kube


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kubevisor-agent",
        description="Run VMs bound to one hypervisor host as libvirt domains.",
    )
    parser.add_argument("--host", required=True, help="HypervisorHost name of this node")
    parser.add_argument(
        "--libvirt-uri",
        default="qemu:///system",
        help="libvirt URI to manage, or vsphere://VCENTER[:PORT]/HOST for one host of a vCenter",
    )
    parser.add_argument(
        "--vsphere-credentials",
        type=Path,
        help="directory with files `username` and `password` (a mounted Secret) for vsphere://",
    )
    parser.add_argument(
        "--vsphere-insecure",
        action="store_true",
        help="accept any TLS certificate from the vCenter (self-signed test setups only)",
    )
    parser.add_argument(
        "--domain-type",
        choices=("auto", "kvm", "qemu", "lxc", "test"),
        default="auto",
        help="libvirt domain type: auto picks kvm when the host offers it, /dev/kvm answers "
        "the KVM API and this host is not itself a VM (nested KVM is unreliable), else qemu "
        "(TCG, saying why in the HypervisorHost's status.hypervisor.message), else lxc "
        "(system containers, with an lxc:// URI); kvm insists on KVM; test for libvirt's "
        "test driver (and vSphere, which reads only the name, uuid, memory and vCPUs of "
        "the XML)",
    )
    parser.add_argument(
        "--kvm-check",
        choices=("device", "libvirt"),
        default="device",
        help="how auto knows KVM works: device opens /dev/kvm here (an agent beside it); "
        "libvirt takes libvirt's offer of kvm, made only when its QEMU can use the host's "
        "/dev/kvm (an unprivileged agent in a pod, which cannot open the device). A nested "
        "host runs TCG either way",
    )
    parser.add_argument("--state-dir", type=Path, default=Path("/var/lib/kubevisor"))
    parser.add_argument(
        "--qemu-log-dir",
        type=Path,
        help="where this host's libvirtd writes its domains' logs (NAME.log), read for "
        "`kubevisor diagnose` (default: /var/log/libvirt/qemu for qemu:///system, "
        "/var/log/libvirt/lxc for lxc:///; none for remote URIs)",
    )
    parser.add_argument("--image-dir", type=Path, default=Path("/var/lib/kubevisor/images"))
    parser.add_argument(
        "--image-cache-max-size",
        type=byte_count,
        default="50Gi",
        help="evict unused images from the image cache (IMAGE_DIR/.cache), oldest last use "
        "first, while it is larger than this quantity (default: 50Gi)",
    )
    parser.add_argument(
        "--image-cache-max-unused",
        type=duration,
        default="24h",
        help="evict cached images no VM here has used for this long: seconds, or a "
        "duration like 90m, 24h, 7d (default: 24h)",
    )
    parser.add_argument(
        destinations.ALLOW_FLAG,
        type=allow_list,
        action="extend",
        default=[],
        metavar="NETWORK|HOST,...",
        help="image URLs may reach these networks (CIDRs or addresses) and host names (an "
        "internal mirror; 127.0.0.0/8 for a test server on this host) even where they are "
        "loopback, link-local, this host's or the API server's addresses, all refused by "
        "default; comma-separated, repeatable. The API server's own endpoint stays refused",
    )
    parser.add_argument(
        "--boot-dir",
        type=Path,
        action="append",
        default=[],
        help="a directory whose files a VM's boot.kernel and boot.initrd may name (after "
        "symlinks); repeatable. None (the default): a VM naming boot files fails with "
        "reason HostPathRefused",
    )
    parser.add_argument(
        "--rootfs-dir",
        type=Path,
        action="append",
        default=[],
        help="a directory whose subdirectories a container's container.rootfs may name "
        "(after symlinks); repeatable. None (the default): containers fail with reason "
        "HostPathRefused",
    )
    parser.add_argument(
        "--allow-privileged-containers",
        action="store_true",
        help="run system containers without a user namespace, their root the host's root "
        "(default: a container's ids 0-65535 are the host's 100000-165535, <idmap>)",
    )
    parser.add_argument("--guest-kernel", help="default kernel for VMs without boot or disks")
    parser.add_argument("--guest-initrd", help="default initrd for those VMs")
    parser.add_argument("--guest-cmdline", default="console=ttyS0", help="their kernel cmdline")
    parser.add_argument(
        "--cgroup-controllers",
        help="comma-separated cgroup controllers libvirt uses for VMs (empty: none); "
        "default: the cgroup_controllers of --qemu-conf, else unknown, assume all",
    )
    parser.add_argument(
        "--qemu-conf",
        type=Path,
        default=None,
        help="the host's qemu.conf (e.g. /etc/libvirt/qemu.conf mounted read-only), read "
        "for its seccomp_sandbox and cgroup_controllers settings; unset: reported as unknown",
    )
    parser.add_argument(
        "--migration-uri",
        default=None,
        help="libvirt URI other hosts reach this host's libvirtd at for live migration "
        "(default: --libvirt-uri; use e.g. qemu+tls://HOST/system in a cluster)",
    )
    parser.add_argument(
        "--migrate-uri",
        default=None,
        help="where this host's QEMU receives migration streams, e.g. tcp://10.0.0.2 "
        "(default: libvirt's choice, the host's name)",
    )
    parser.add_argument(
        "--migration-tls-dir",
        type=Path,
        default=None,
        help="encrypt live migrations from this host (memory and copied disks) with TLS, "
        "libvirt's VIR_MIGRATE_TLS, using the certificates in this directory: ca-cert.pem, "
        "server-cert.pem, server-key.pem, client-cert.pem, client-key.pem. It must be the "
        "directory this host's qemu.conf names as migrate_tls_x509_cert_dir (default "
        "/etc/pki/qemu), as every other host's; a migration is refused, saying why, while "
        "a file is missing or a certificate invalid. Unset (the default): plain TCP",
    )
    flags.add_process(parser, metrics_port=9091)
    for flag, kind in (
        ("lease_duration", int),
        ("shutdown_grace", float),
        ("resync_interval", float),
    ):
        parser.add_argument(
            f"--{flag.replace('_', '-')}",
            type=kind,
            default=flags.default(Settings, flag),
            help="seconds (default: %(default)s)",
        )
    parser.add_argument(
        "--self-fence-after",
        type=int,
        default=60,
        help="seconds without a renewed Lease after which the agent destroys its guests, so "
        "the controller may start them elsewhere without running them twice; it publishes "
        "this in its host's status.selfFence and the controller waits at least this long "
        "(plus its --fence-margin) after the last renewal. At least half the lease "
        "duration; 0: off (see the README on split brain)",
    )
    network = parser.add_argument_group("the host's data plane for VMs on Networks")
    network.add_argument(
        "--host-network",
        choices=("linux", "off"),
        default="off",
        help="linux: realise Networks on this host (Linux bridges, VXLAN, dnsmasq, nftables; "
        "needs CAP_NET_ADMIN, dnsmasq-base and nft); off: take no VMs on Networks",
    )
    network.add_argument(
        "--tunnel-ip",
        type=ipaddress.IPv4Address,
        help="this host's underlay address for overlay Networks (VXLAN), reported as "
        "status.network.tunnelEndpoint; unset: no VMs on overlay Networks here",
    )
    network.add_argument(
        "--underlay-mtu", type=int, default=1500, help="MTU of the underlay (overlay: 50 less)"
    )
    network.add_argument(
        "--network-netns",
        help="named network namespace (/run/netns) holding this host's data plane, for test "
        "hosts sharing one machine (default: the agent's own)",
    )
    network.add_argument(
        "--dhcp-namespace-prefix",
        default="kvdhcp-",
        help="prefix of the DHCP servers' network namespaces (machine-wide names)",
    )
    console = flags.add_listener(
        parser,
        "serial console endpoint (for kubevisor-api only)",
        prefix="console",
        serves="serve consoles over mTLS",
    )
    console.add_argument(
        "--console-client-ca", type=Path, help="CA that signs kubevisor-api's client certificate"
    )
    console.add_argument(
        "--console-allowed-clients",
        default=console_protocol.API_CLIENT,
        help="comma-separated client certificate CommonNames admitted",
    )
    console.add_argument(
        "--console-advertise",
        help="URL kubevisor-api reaches this endpoint at, written to the HypervisorHost's "
        "status.consoleEndpoint (default: https://$POD_IP, else this host's name, :PORT)",
    )
    parser.add_argument(
        "--metrics-advertise",
        help="URL `kubevisor top` reads this agent's /metrics at, written to the "
        "HypervisorHost's status.metricsEndpoint (default: http://$POD_IP, else this host's "
        "name, :METRICS_PORT/metrics; none when --metrics-port is 0)",
    )
    args = parser.parse_args(argv)
    on_vsphere = args.libvirt_uri.startswith(f"{vsphere.SCHEME}://")
    if on_vsphere and not args.vsphere_credentials:
        parser.error(f"--libvirt-uri {args.libvirt_uri} needs --vsphere-credentials")
    if on_vsphere and args.migration_tls_dir:
        parser.error(
            "--migration-tls-dir is for libvirt hosts: vCenter encrypts vMotion by its own "
            "per-VM policy"
        )
    if args.console_port and not (
        args.console_cert and args.console_key and args.console_client_ca
    ):
        parser.error("--console-port needs --console-cert, --console-key and --console-client-ca")
    if args.self_fence_after:
        problem = selffence.check_deadline(
            deadline=args.self_fence_after, lease_duration=args.lease_duration
        )
        if problem is not None:
            parser.error(problem)
    return args


def allow_list(text: str) -> list[str]:
    """Comma-separated networks and host names (an argparse type)."""
    entries = [e.strip() for e in text.split(",") if e.strip()]
    try:
        destinations.allowed(entries)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return entries


def byte_count(text: str) -> int:
    """A Kubernetes quantity such as 50Gi, in bytes (an argparse type)."""
    if not quantity.is_quantity(text) or quantity.to_bytes(text) <= 0:
        raise argparse.ArgumentTypeError(f"not a positive quantity: {text!r} (e.g. 50Gi)")
    return quantity.to_bytes(text)


DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration(text: str) -> float:
    """Seconds, plain or with one unit of s, m, h, d (an argparse type)."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in DURATION_UNITS else (text, "s")
    try:
        seconds = float(number) * DURATION_UNITS[unit]
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 3600, 90m, 24h)")
    return seconds


def cgroup_controllers(args: argparse.Namespace) -> frozenset[str] | None:
    """--cgroup-controllers when given (empty: none), else what --qemu-conf names."""
    if args.cgroup_controllers is not None:
        return frozenset(c for c in args.cgroup_controllers.split(",") if c)
    return probe.cgroup_controllers(args.qemu_conf)


def advertised(port: int, explicit: str | None, *, scheme: str, path: str = "") -> str | None:
    """The URL to advertise for a listener on `port`: `explicit` when given, else this
    pod's IP (or this host's name); None when the listener is off (port 0)."""
    if not port:
        return None
    if explicit:
        return explicit
    address = os.environ.get("POD_IP") or socket.getfqdn()
    return f"{scheme}://{address}:{port}{path}"


def console_endpoint(args: argparse.Namespace) -> str | None:
    """The console URL to advertise (status.consoleEndpoint), None when it is off."""
    return advertised(args.console_port, args.console_advertise, scheme="https")


def metrics_endpoint(args: argparse.Namespace) -> str | None:
    """The /metrics URL to advertise (status.metricsEndpoint), None when it is off."""
    return advertised(args.metrics_port, args.metrics_advertise, scheme="http", path="/metrics")


async def serve_console(
    args: argparse.Namespace,
    kube: Kube,
    hypervisor: Hypervisor,
    *,
    serial_log: Callable[[str], Path],
    ring: diagnostics.LogRing,
) -> web.AppRunner | None:
    """The console endpoint, opening consoles through the hypervisor's driver and
    gathering the host's part of `kubevisor diagnose` (`agent.diagnostics`)."""
    if not args.console_port:
        return None

    async def diagnose(vm: dict[str, object], lines: str | None) -> dict[str, object]:
        return await diagnostics.bundle(
            vm,
            host=args.host,
            hypervisor=hypervisor,
            serial_log=serial_log,
            ring=ring,
            lines=diagnostics.clamp_lines(lines),
        )

    async def console_log(vm: dict[str, object], lines: str | None) -> str:
        return await diagnostics.serial_tail(
            vm, serial_log=serial_log, lines=diagnostics.clamp_lines(lines)
        )

    app = agentserver.application(
        host=args.host,
        get_vm=kube.get_vm,
        open_console=hypervisor.open_console,
        open_display=hypervisor.open_display,
        screenshot=hypervisor.screenshot,
        allowed_clients=[n for n in args.console_allowed_clients.split(",") if n],
        diagnose=diagnose,
        console_log=console_log,
    )
    context = tls.server_context(
        cert=args.console_cert,
        key=args.console_key,
        client_ca=args.console_client_ca,
        required=True,
    )
    return await agentserver.serve(
        app, address=args.console_address, port=args.console_port, context=context
    )


@dataclasses.dataclass(frozen=True)
class DomainTypeChoice:
    """The domain type the agent renders, and why not a faster one the host offers."""

    type: DomainType
    message: str | None = None


def kvm_facts(check: str, probed: kvm.Probe) -> kvm.Probe:
    """What domain_type weighs of KVM (--kvm-check): the device as `probed` here, or, for
    an agent that cannot open it, libvirt's offer standing for the device; the nested
    check (the CPU flags, which a container sees as the host's) stays."""
    return probed if check == "device" else dataclasses.replace(probed, device_problem=None)


def domain_type(choice: str, *, offered: Sequence[str], kvm: kvm.Probe) -> DomainTypeChoice:
    """The domain type to render: explicit, or the best one the host offers. KVM only
    where /dev/kvm works and the host is not nested (`kvm`); else TCG, saying why."""
    if choice != "auto":
        return DomainTypeChoice(choice)  # type: ignore[arg-type]
    problem = kvm.problem()
    if "kvm" in offered and problem is None:
        return DomainTypeChoice("kvm")
    if "qemu" in offered:
        if "kvm" not in offered:
            return DomainTypeChoice("qemu")
        return DomainTypeChoice(
            "qemu",
            f"libvirt offers KVM but it is not used: {problem}; guests run on QEMU's TCG "
            "emulation (the agent's --domain-type kvm insists on KVM)",
        )
    if "lxc" in offered:
        return DomainTypeChoice("lxc")
    return DomainTypeChoice("test")


def report_migration_tls(directory: Path | None) -> None:
    """Say at start whether live migrations will be encrypted, and what to fix if not: the
    agent keeps running its VMs either way (refusing to start would take the host down)."""
    log = logging.getLogger("kubevisor.agent")
    if directory is None:
        log.info("live migrations from this host are not encrypted (no --migration-tls-dir)")
    elif (problem := libvirt_migration.tls_problem(directory)) is not None:
        log.warning("live migrations from this host will be refused until fixed: %s", problem)
    else:
        log.info("live migrations from this host are encrypted with TLS (%s)", directory)


def host_network_for(args: argparse.Namespace) -> LinuxHostNetwork | None:
    """The data plane driver `--host-network` asks for (it checks dnsmasq and its state
    directory now, so a host that cannot serve DHCP says so at start)."""
    if args.host_network == "off":
        return None
    return LinuxHostNetwork(
        state_dir=args.state_dir,
        netns=args.network_netns,
        namespace_prefix=args.dhcp_namespace_prefix,
    )


def hypervisor_for(args: argparse.Namespace) -> Hypervisor:
    """The driver for --libvirt-uri: vSphere for vsphere://, libvirt otherwise."""
    if not args.libvirt_uri.startswith(f"{vsphere.SCHEME}://"):
        return LibvirtHypervisor(
            args.libvirt_uri,
            migration_tls=args.migration_tls_dir,
            log_dir=args.qemu_log_dir or libvirt_diagnostics.default_log_dir(args.libvirt_uri),
        )
    secret = args.vsphere_credentials
    return vsphere.VsphereHypervisor(
        args.libvirt_uri,
        username=(secret / "username").read_text().strip(),
        password=(secret / "password").read_text().strip(),
        verify_tls=not args.vsphere_insecure,
    )


async def run(args: argparse.Namespace, *, ring: diagnostics.LogRing) -> None:
    metrics.serve(args.metrics_port)
    hypervisor = hypervisor_for(args)
    await hypervisor.connect()
    facts = await hypervisor.host_facts()
    chosen = domain_type(
        args.domain_type, offered=facts.domain_types, kvm=kvm_facts(args.kvm_check, kvm.probe())
    )
    kube = await Kube.connect(args.kubeconfig)
    settings = Settings(
        host=args.host,
        domain_type=chosen.type,
        domain_type_message=chosen.message,
        state_dir=args.state_dir,
        image_dir=args.image_dir,
        default_boot=BootFiles(
            kernel=args.guest_kernel, initrd=args.guest_initrd, cmdline=args.guest_cmdline
        )
        if args.guest_kernel
        else None,
        cgroup_controllers=cgroup_controllers(args),
        qemu_conf=args.qemu_conf,
        host_paths=hostpaths.Allowed(
            boot=tuple(str(d.absolute()) for d in args.boot_dir),
            rootfs=tuple(str(d.absolute()) for d in args.rootfs_dir),
        ),
        container_ids=None if args.allow_privileged_containers else IdRange(),
        lease_namespace=args.lease_namespace,
        lease_duration=args.lease_duration,
        self_fence_after=args.self_fence_after or None,
        shutdown_grace=args.shutdown_grace,
        resync_interval=args.resync_interval,
        migration_uri=args.migration_uri,
        migrate_uri=args.migrate_uri,
        console_endpoint=console_endpoint(args),
        metrics_endpoint=metrics_endpoint(args),
        tunnel_ip=args.tunnel_ip,
        underlay_mtu=args.underlay_mtu,
        network_netns=args.network_netns,
        dhcp_namespace_prefix=args.dhcp_namespace_prefix,
        image_cache_max_bytes=args.image_cache_max_size,
        image_cache_max_unused=args.image_cache_max_unused,
        image_sources=imagefetch.host_policy(
            allow=args.image_source_allow,
            api_server=kube.server,
            own=[os.environ[name] for name in ("NODE_IP", "POD_IP") if os.environ.get(name)],
            max_bytes=args.image_cache_max_size,
        ),
    )
    # pyroute2's synchronous socket runs an event loop of its own: not inside this one.
    host_network = await asyncio.to_thread(host_network_for, args)
    agent = Agent(
        settings=settings,
        kube=kube,
        hypervisor=hypervisor,
        libvirt_uri=args.libvirt_uri,
        host_network=host_network,
    )
    logging.getLogger("kubevisor.agent").info(
        "host %s: hypervisor %s, domain type %s%s",
        args.host,
        args.libvirt_uri,
        chosen.type,
        f" ({chosen.message})" if chosen.message else "",
    )
    report_migration_tls(args.migration_tls_dir)
    console_runner = await serve_console(
        args, kube, hypervisor, serial_log=agent.files.serial_log, ring=ring
    )
    usage = vmmetrics.VmUsageCollector(
        hypervisor,
        host=args.host,
        loop=asyncio.get_running_loop(),
        migrating=lambda: agent.migrator.job_stats,
    )
    REGISTRY.register(usage)
    task = asyncio.create_task(agent.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        REGISTRY.unregister(usage)
        if console_runner is not None:
            await console_runner.cleanup()
        await kube.close()
        await hypervisor.close()
        if host_network is not None:
            await asyncio.to_thread(host_network.close)


def unreadable(qemu_conf: Path | None) -> str | None:
    """Why the agent cannot read the qemu.conf it was given, None when it can (or has none):
    a path that does not reach the file would report the host's settings as unknown."""
    if qemu_conf is None:
        return None
    try:
        qemu_conf.read_bytes()
    except OSError as error:
        return (
            f"--qemu-conf {qemu_conf}: {error.strerror or error}; mount the host's qemu.conf "
            "there, or leave the flag out to report its settings as unknown"
        )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if problem := unreadable(args.qemu_conf):
        print(f"kubevisor-agent: error: {problem}", file=sys.stderr)
        return 2
    flags.start_logging(args)
    asyncio.run(run(args, ring=diagnostics.LogRing().install()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
