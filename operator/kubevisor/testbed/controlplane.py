"""A real kube-apiserver + etcd on 127.0.0.1, for development (`kubevisor dev up`) and tests.

The binaries come from `hack/controlplane/build.sh` (built from Go modules, cached outside
the repository). Everything a running control plane owns lives in one state directory:
certificates, the etcd data, logs, the admin kubeconfig and `state.json` with the process
ids, so that `stop()` can be called from another process than the one that started it.

Authentication is by client certificates signed by a throwaway CA, like envtest: the admin
is in `system:masters`, and `credentials()` mints a kubeconfig for any other user and
groups (RBAC tests bind roles to those names). Authorization is RBAC.

The aggregation layer is on: a second throwaway CA (the front-proxy CA) signs the
apiserver's proxy client certificate (CommonName `front-proxy-client`), and
`--enable-aggregator-routing` makes it dial an APIService's Endpoints addresses directly,
so an aggregated server on 127.0.0.1 needs only a selector-less Service and an Endpoints.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kubevisor.testbed import procfs
from kubevisor.testbed.pki import Ca, write_key

ADMIN_USER = "kubevisor-admin"
FRONT_PROXY_CLIENT = "front-proxy-client"
STATE_FILE = "state.json"


class ControlPlaneError(RuntimeError):
    """The control plane could not be started; the message names the log to read."""


class KubectlError(RuntimeError):
    """A kubectl call failed; the message carries kubectl's own error output."""


@dataclass(frozen=True)
class ControlPlane:
    """A running control plane, as recorded in its state directory."""

    state_dir: Path
    bin_dir: Path
    server: str
    version: str
    etcd_pid: int
    apiserver_pid: int

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def front_proxy_ca(self) -> Path:
        """The CA an aggregated API server verifies the apiserver's proxy certificate with."""
        return _Pki(self.state_dir / "pki").front_proxy_ca_cert

    @property
    def kubectl_path(self) -> Path:
        return self.bin_dir / "kubectl"

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        kubeconfig: Path | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run the kubectl built with this apiserver against it (admin unless told otherwise)."""
        config = kubeconfig or self.kubeconfig
        done = subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={config}", *args],
            check=False,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    def credentials(self, user: str, groups: Sequence[str] = ()) -> Path:
        """Write a kubeconfig for `user` in `groups`, signed by this control plane's CA."""
        pki = _Pki(self.state_dir / "pki")
        name = _safe_name(user)
        cert, key = pki.client(name, user, groups)
        return _write_kubeconfig(
            self.state_dir / f"{name}.kubeconfig",
            server=self.server,
            ca=pki.ca_cert,
            cert=cert,
            key=key,
            user=user,
        )


def start(
    *,
    bin_dir: Path,
    state_dir: Path,
    crd_paths: Sequence[Path] = (),
    timeout: float = 120.0,
) -> ControlPlane:
    """Start etcd and kube-apiserver on free loopback ports, wait for /readyz, install CRDs.

    Raises ControlPlaneError (after stopping what it started) when something does not come up.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    if load(state_dir) is not None:
        raise ControlPlaneError(f"a control plane already runs from {state_dir}; stop it first")
    logs = state_dir / "logs"
    logs.mkdir(exist_ok=True)
    pki = _Pki(state_dir / "pki")
    pki.create()
    etcd_port, peer_port, api_port = free_ports(3)
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    server = f"https://127.0.0.1:{api_port}"

    etcd = _spawn(
        [
            str(bin_dir / "etcd"),
            "--name=default",
            f"--data-dir={state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ],
        log=logs / "etcd.log",
    )
    apiserver = _spawn(
        [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--cert-dir={pki.dir}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--service-cluster-ip-range=10.0.0.0/24",
            f"--service-account-issuer={server}",
            f"--service-account-key-file={pki.sa_public}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--authorization-mode=RBAC",
            # No controller-manager runs here, so nothing would create default ServiceAccounts.
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            "--profiling=false",
            # The aggregation layer (the console API is an APIService).
            f"--requestheader-client-ca-file={pki.front_proxy_ca_cert}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.proxy_client_cert}",
            f"--proxy-client-key-file={pki.proxy_client_key}",
            "--enable-aggregator-routing=true",
        ],
        log=logs / "kube-apiserver.log",
    )
    plane = ControlPlane(
        state_dir=state_dir,
        bin_dir=bin_dir,
        server=server,
        version="",
        etcd_pid=etcd.pid,
        apiserver_pid=apiserver.pid,
    )
    _save(plane)
    try:
        admin_cert, admin_key = pki.client("admin", ADMIN_USER, ["system:masters"])
        _write_kubeconfig(
            plane.kubeconfig,
            server=server,
            ca=pki.ca_cert,
            cert=admin_cert,
            key=admin_key,
            user=ADMIN_USER,
        )
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(admin_cert), str(admin_key))
        _wait_ready(server, context, processes=(etcd, apiserver), logs=logs, timeout=timeout)
        version = _get_json(f"{server}/version", context)["gitVersion"]
        plane = ControlPlane(**{**asdict(plane), "version": str(version)})
        _save(plane)
        if crd_paths:
            install_crds(plane, crd_paths, timeout=timeout)
    except BaseException:
        stop(state_dir)
        raise
    return plane


def install_crds(plane: ControlPlane, paths: Sequence[Path], *, timeout: float = 60.0) -> None:
    """Apply CRD files or directories and wait until every CRD is Established."""
    files = [f for p in paths for f in (sorted(p.glob("*.yaml")) if p.is_dir() else [p])]
    if not files:
        return
    args = [arg for f in files for arg in ("-f", str(f))]
    plane.kubectl("apply", "--server-side", "--force-conflicts", *args)
    plane.kubectl(
        "wait",
        "--for=condition=Established",
        f"--timeout={int(timeout)}s",
        *args,
        timeout=timeout + 10,
    )
    # Established is not yet servable: the first requests can still get 429 "storage is
    # (re)initializing". Wait until every new resource answers a list.
    names = plane.kubectl("get", *args, "-o", "jsonpath={.items[*].spec.names.plural}")
    plurals = names.stdout.split() or [
        plane.kubectl("get", *args, "-o", "jsonpath={.spec.names.plural}").stdout
    ]
    deadline = time.monotonic() + timeout
    for plural in plurals:
        while plane.kubectl("get", plural, "-A", "--request-timeout=5s", check=False).returncode:
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"custom resource {plural} not served after {timeout}s")
            time.sleep(0.2)


def load(state_dir: Path) -> ControlPlane | None:
    """The control plane recorded in `state_dir`, if its apiserver process still lives."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    plane = ControlPlane(
        state_dir=Path(raw["state_dir"]),
        bin_dir=Path(raw["bin_dir"]),
        server=raw["server"],
        version=raw["version"],
        etcd_pid=raw["etcd_pid"],
        apiserver_pid=raw["apiserver_pid"],
    )
    return plane if procfs.alive(plane.apiserver_pid) else None


def stop(state_dir: Path, *, timeout: float = 20.0) -> None:
    """Stop the apiserver then etcd (SIGTERM, then SIGKILL), and forget the state file."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return
    raw = json.loads(path.read_text())
    for pid in (raw["apiserver_pid"], raw["etcd_pid"]):
        _terminate_group(pid, timeout=timeout)
    path.unlink()


# -- processes ---------------------------------------------------------------------------


def _spawn(argv: list[str], *, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        # A session of its own: the process outlives `kubevisor dev up` and is stopped as a group.
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _terminate_group(pid: int, *, timeout: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not procfs.alive(pid):
                return
            time.sleep(0.05)


def free_ports(count: int) -> list[int]:
    """Loopback TCP ports free right now (the usual small race applies)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _wait_ready(
    server: str,
    context: ssl.SSLContext,
    *,
    processes: Sequence[subprocess.Popen[bytes]],
    logs: Path,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                name = Path(str(process.args[0])).name  # type: ignore[index]
                raise ControlPlaneError(
                    f"{name} exited with code {process.returncode}; see {logs / (name + '.log')}"
                )
        try:
            with urllib.request.urlopen(f"{server}/readyz", context=context, timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError as error:
            last_error = str(error)
        time.sleep(0.2)
    raise ControlPlaneError(
        f"kube-apiserver not ready after {timeout:.0f}s ({last_error}); see {logs}"
    )


def _get_json(url: str, context: ssl.SSLContext) -> dict[str, object]:
    with urllib.request.urlopen(url, context=context, timeout=10) as reply:
        result: dict[str, object] = json.load(reply)
    return result


def _save(plane: ControlPlane) -> None:
    data = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(plane).items()}
    tmp = plane.state_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(plane.state_dir / STATE_FILE)


# -- certificates ------------------------------------------------------------------------


def _safe_name(user: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in user)


class _Pki:
    """The control plane's files under `directory`: the CA (which also signs the clients'
    certificates), the serving certificate, the service-account key pair, the front-proxy
    CA and the proxy client certificate it signs."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = Ca.at(directory)
        self.ca_cert = self.ca.cert
        self.serving_cert = directory / "apiserver.crt"
        self.serving_key = directory / "apiserver.key"
        self.sa_key = directory / "sa.key"
        self.sa_public = directory / "sa.pub"
        self.front_proxy = Ca.at(directory, stem="front-proxy-ca")
        self.front_proxy_ca_cert = self.front_proxy.cert
        self.proxy_client_cert = directory / f"{FRONT_PROXY_CLIENT}.crt"
        self.proxy_client_key = directory / f"{FRONT_PROXY_CLIENT}.key"

    def create(self) -> None:
        Ca.create(self.dir, "kubevisor-dev-ca")
        self.ca.issue(
            "apiserver",
            server=True,
            hosts=("localhost", "kubernetes.default.svc", "127.0.0.1", "10.0.0.1"),
            common_name="kube-apiserver",
        )
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        write_key(self.sa_key, sa_key)
        self.sa_public.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        Ca.create(self.dir, "kubevisor-front-proxy-ca", stem="front-proxy-ca")
        self.front_proxy.issue(FRONT_PROXY_CLIENT)

    def client(self, name: str, user: str, groups: Sequence[str]) -> tuple[Path, Path]:
        """A client certificate: CommonName is the user, Organizations are the groups."""
        return self.ca.issue(name, groups=groups, common_name=user)


def _write_kubeconfig(
    path: Path, *, server: str, ca: Path, cert: Path, key: Path, user: str
) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kubevisor-dev",
                "cluster": {"server": server, "certificate-authority": str(ca)},
            }
        ],
        "users": [
            {"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [
            {"name": f"{user}@kubevisor-dev", "context": {"cluster": "kubevisor-dev", "user": user}}
        ],
        "current-context": f"{user}@kubevisor-dev",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
