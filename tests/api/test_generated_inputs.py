"""Generated and hostile manifests against the real API server (tier 3, issue 16).

Each example is a manifest from api/generated_inputs.py, sent as a server-side dry run
(nothing is stored) with fieldValidation=Warn (unknown fields are pruned, as for most
clients other than kubectl). For every one:
- the API server answers within 2 s, and refuses with a 4xx, never a 5xx;
- an object it accepts (the dry run returns it as it would be stored: defaulted and
  pruned) validates with kubevisor's model within 100 ms of CPU time;
- an accepted VirtualMachine goes through placement on a synthetic host and renders a
  domain that passes every check in generated_inputs.DOMAIN_CHECKS (a container may
  instead get the DomainError that says why a host cannot run it); an accepted
  HypervisorHost becomes a placement snapshot, and placing a VM against it raises nothing.

CI runs a fixed number of examples per kind (KUBEVISOR_FUZZ_EXAMPLES, default 120, half
that for MigrationJobs; about 20 s here, 3000 per kind about 3.5 min). By hand:
    KUBEVISOR_FUZZ_EXAMPLES=5000 .venv/bin/pytest tests/api/test_generated_inputs.py
"""

from __future__ import annotations

import http.client
import json
import os
import posixpath
import ssl
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any
from urllib.parse import urlparse

import pydantic
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api import generated_inputs as gen
from kubevisor.api import hypervisorhost, migrationjob, network, virtualmachine
from kubevisor.api.schema import ApiModel
from kubevisor.core import flavors, hostpaths
from kubevisor.core.domain import converter
from kubevisor.core.domain.document import DomainError
from kubevisor.core.network import ipam
from kubevisor.core.placement import inputs, scheduler
from kubevisor.core.placement.state import PlacementState
from kubevisor.testbed.controlplane import ControlPlane

pytestmark = pytest.mark.apiserver

EXAMPLES = int(os.environ.get("KUBEVISOR_FUZZ_EXAMPLES", "120"))
ANSWER_WITHIN = 2.0
PARSE_WITHIN = 0.1

MODELS: dict[str, type[ApiModel]] = {
    "VirtualMachine": virtualmachine.VirtualMachine,
    "HypervisorHost": hypervisorhost.HypervisorHost,
    "MigrationJob": migrationjob.MigrationJob,
    "Network": network.Network,
}
PLURALS = {
    "VirtualMachine": "virtualmachines",
    "HypervisorHost": "hypervisorhosts",
    "MigrationJob": "migrationjobs",
    "Network": "networks",
}
SMALL_VM = virtualmachine.VirtualMachine.model_validate(
    {
        "metadata": {"name": "small", "namespace": gen.NAMESPACE},
        "spec": {"memory": {"size": "64Mi"}},
    }
)


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    seconds: float


class DryRun:
    """Server-side dry-run creates over one kept-alive HTTPS connection, as the admin
    (kubectl per request would spend most of the time starting kubectl)."""

    def __init__(self, plane: ControlPlane) -> None:
        config = yaml.safe_load(plane.kubeconfig.read_text())
        cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
        context = ssl.create_default_context(cafile=cluster["certificate-authority"])
        context.load_cert_chain(user["client-certificate"], user["client-key"])
        url = urlparse(cluster["server"])
        assert url.hostname is not None and url.port is not None
        # A request the server works on for minutes fails the test here, after 30 s.
        self.connection = http.client.HTTPSConnection(
            url.hostname, url.port, context=context, timeout=30
        )

    def create(self, manifest: dict[str, Any]) -> Answer:
        kind = manifest["kind"]
        scope = "" if kind == "HypervisorHost" else f"/namespaces/{gen.NAMESPACE}"
        path = f"/apis/kubevisor.io/v1alpha1{scope}/{PLURALS[kind]}"
        body = json.dumps(manifest).encode()
        try:
            return self._post(f"{path}?dryRun=All&fieldValidation=Warn", body)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # The server closed the kept-alive connection between two requests.
            self.connection.close()
            return self._post(f"{path}?dryRun=All&fieldValidation=Warn", body)

    def _post(self, target: str, body: bytes) -> Answer:
        started = time.monotonic()
        self.connection.request(
            "POST",
            target,
            body=body,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        response = self.connection.getresponse()
        payload = response.read()
        seconds = time.monotonic() - started
        return Answer(response.status, json.loads(payload) if payload else {}, seconds)

    def close(self) -> None:
        self.connection.close()


@pytest.fixture(scope="module")
def dry_run(control_plane: ControlPlane) -> Iterator[DryRun]:
    control_plane.kubectl("create", "namespace", gen.NAMESPACE, check=False)
    client = DryRun(control_plane)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def tally() -> Iterator[Counter[str]]:
    """Outcomes per kind, printed at the end (-s shows them): the share of accepted
    objects says how much the checks after the API server were exercised."""
    counts: Counter[str] = Counter()
    yield counts
    print("\ngenerated inputs:", dict(sorted(counts.items())))


def timely(dry_run: DryRun, manifest: dict[str, Any]) -> Answer:
    """The answer to `manifest`, which must come within ANSWER_WITHIN. A slow answer is
    asked for once more: on a loaded machine one request can wait for a CPU, while input
    that costs the API server unbounded work is slow every time (minutes, not seconds)."""
    answer = dry_run.create(manifest)
    if answer.seconds >= ANSWER_WITHIN:
        answer = dry_run.create(manifest)
    assert answer.seconds < ANSWER_WITHIN, f"answered after {answer.seconds:.1f} s twice"
    return answer


def _send(dry_run: DryRun, manifest: dict[str, Any], tally: Counter[str]) -> Any:
    """The accepted object as kubevisor's model reads it, or None when refused."""
    kind = manifest["kind"]
    answer = timely(dry_run, manifest)
    assert answer.status < 500, answer.body
    if answer.status >= 400:
        tally[f"{kind} refused"] += 1
        return None
    assert answer.status == 201, answer.body
    tally[f"{kind} accepted"] += 1
    body = answer.body
    if kind == "VirtualMachine" and body["spec"].get("flavor"):
        body = with_flavor(body)
        if body is None:
            tally["VirtualMachine refused by the controller (flavor)"] += 1
            return None
    try:
        model, seconds = parsed(kind, body)
    except pydantic.ValidationError as refused:
        pytest.fail(f"the API server stored what kubevisor cannot read: {refused}")
    if seconds >= PARSE_WITHIN:
        # Once more: a garbage collection can pause any one call; costly input is
        # costly every time.
        model, seconds = parsed(kind, body)
    assert seconds < PARSE_WITHIN, f"parsing took {seconds:.2f} s of CPU twice"
    return model


def with_flavor(vm: dict[str, Any]) -> dict[str, Any] | None:
    """A stored VM naming a flavor as the controller leaves it (CEL cannot check it with
    its flavor): its status recording a flavor that gives the memory it lacks, or None
    when the controller refuses the two together (core.flavors)."""
    spec = {} if "memory" in vm["spec"] else {"memory": {"size": "128Mi"}}
    name = vm["spec"]["flavor"]["name"]
    decided = flavors.resolve(vm, {"metadata": {"name": name}, "spec": spec})
    if isinstance(decided, flavors.Refusal):
        return None
    return {**vm, "status": {**(vm.get("status") or {}), "flavor": decided}}


def parsed(kind: str, body: dict[str, Any]) -> tuple[ApiModel, float]:
    """The object as kubevisor's model reads it, and the CPU time that took."""
    started = time.process_time()
    model = MODELS[kind].model_validate(body)
    return model, time.process_time() - started


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def survives_kubevisor(model: ApiModel, tally: Counter[str]) -> None:
    """What an accepted object must get through after the model: a VM placement and a
    domain (or, for a container only, the DomainError that says why not); a host a
    placement snapshot that a VM can be placed against."""
    if isinstance(model, virtualmachine.VirtualMachine):
        with_placement, fitted = gen.placed(model)
        tally["VirtualMachine placed"] += fitted
        rendered = gen.render(with_placement)
        if isinstance(rendered, hostpaths.Refusal):
            # The agent fails such a VM (HostPathRefused): its path leads out of ALLOWED.
            resolved = posixpath.normpath(rendered.path)
            assert not any(hostpaths.inside(resolved, d) for d in rendered.directories)
            tally["VirtualMachine host path refused"] += 1
            return
        if isinstance(rendered, DomainError):
            if any(interface.network for interface in model.spec.networks):
                # Rendered only with the host's plan for it, which a fuzzed VM has not.
                assert "not attached on this host" in str(rendered), rendered
                tally["VirtualMachine on a Network refused by render"] += 1
                return
            assert model.spec.container is not None, f"render refused a VM: {rendered}"
            tally["VirtualMachine container refused by render"] += 1
            return
        gen.check_rendered(rendered, gen.DOMAIN_CHECKS)
        tally["VirtualMachine rendered"] += 1
    elif isinstance(model, network.Network):
        # The controller builds the Network's address pool and hands out its first
        # address: quickly, whatever the subnet's size (a /8 holds 16 million).
        started = time.process_time()
        pool = ipam.AddressPool.of("fuzz/net", model.spec.subnet)
        first = pool.allocate(ipam.Owner("fuzz/vm", "eth0"))
        assert time.process_time() - started < PARSE_WITHIN
        assert pool.capacity == 0 or isinstance(first, IPv4Address), first
        tally["Network hands out an address"] += isinstance(first, IPv4Address)
    elif isinstance(model, hypervisorhost.HypervisorHost):
        # With a status (the agent's part), so that every admin field takes part.
        reported = gen.big_host(SMALL_VM).status
        snapshot = inputs.host_snapshot(model.model_copy(update={"status": reported}))
        state = PlacementState.rebuild([snapshot], [])
        decision = scheduler.select_host(state, inputs.request(SMALL_VM))
        tally["HypervisorHost places a VM"] += isinstance(decision, scheduler.Decision)


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(manifest=gen.manifests("VirtualMachine"))
def test_generated_virtual_machines(
    dry_run: DryRun, tally: Counter[str], manifest: dict[str, Any]
) -> None:
    model = _send(dry_run, manifest, tally)
    if model is not None:
        survives_kubevisor(model, tally)


@FUZZ
@given(manifest=gen.manifests("HypervisorHost"))
def test_generated_hypervisor_hosts(
    dry_run: DryRun, tally: Counter[str], manifest: dict[str, Any]
) -> None:
    model = _send(dry_run, manifest, tally)
    if model is not None:
        survives_kubevisor(model, tally)


@settings(FUZZ, max_examples=max(EXAMPLES // 2, 10))
@given(manifest=gen.manifests("MigrationJob"))
def test_generated_migration_jobs(
    dry_run: DryRun, tally: Counter[str], manifest: dict[str, Any]
) -> None:
    _send(dry_run, manifest, tally)


@FUZZ
@given(manifest=gen.manifests("Network"))
def test_generated_networks(dry_run: DryRun, tally: Counter[str], manifest: dict[str, Any]) -> None:
    model = _send(dry_run, manifest, tally)
    if model is not None:
        survives_kubevisor(model, tally)


@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        pytest.param(kind, spec, id=f"{kind}-{index}")
        for kind, seeds in gen.SEEDS.items()
        for index, spec in enumerate(seeds)
    ],
)
def test_every_seed_is_accepted_and_survives_kubevisor(
    dry_run: DryRun, tally: Counter[str], kind: str, spec: dict[str, Any]
) -> None:
    # The generated manifests start from these: each must reach the checks after the
    # API server, or the suite would only ever exercise refusals.
    manifest = {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "seed"},
        "spec": spec,
    }
    model = _send(dry_run, manifest, tally)
    assert model is not None, f"the API server refused seed {spec}"
    survives_kubevisor(model, tally)


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"memory": {"size": "1e999999999"}}, id="huge-exponent"),
        pytest.param({"memory": {"size": "1e999999999.0"}}, id="fractional-huge-exponent"),
        pytest.param(
            {"memory": {"size": "64Mi"}, "placement": {"group": "../../etc/passwd"}},
            id="group-path",
        ),
        pytest.param({"memory": {"size": "64Mi"}, "cpu": {"vcpus": 2**64}}, id="vcpus-2-64"),
        pytest.param(
            {"memory": {"size": "64Mi"}, "cloudInit": {"userData": "x" * 70000}},
            id="user-data-too-long",
        ),
    ],
)
def test_known_hostile_inputs_are_refused_in_time(
    dry_run: DryRun, tally: Counter[str], spec: dict[str, Any]
) -> None:
    manifest = {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": "hostile"},
        "spec": spec,
    }
    answer = timely(dry_run, manifest)
    assert answer.status == 422, answer.body


@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_spec_field_has_a_strategy(data: st.DataObject) -> None:
    # A schema keyword the generator does not know would fail here, not skip fields.
    for kind, paths in gen.PATHS.items():
        for path, node in paths:
            assert gen.node_at(kind, path) is node
            data.draw(gen.value_for(node))
            data.draw(gen.hostile_for(node))
    covered = {path[-1] for paths in gen.PATHS.values() for path, _ in paths}
    assert {"size", "cpuDedicatedSet", "group", "kernel", "rootfs", "maxDowntimeMs"} <= covered


@pytest.mark.parametrize(
    "boot",
    [
        pytest.param({"kernel": "/etc/shadow"}, id="a-host-file"),
        pytest.param({"kernel": f"{gen.BOOT_DIR}/../../../../etc/shadow"}, id="dot-dot"),
        pytest.param({"kernel": f"{gen.BOOT_DIR}/k", "initrd": "/dev/sda"}, id="initrd-a-device"),
    ],
)
def test_the_path_check_fails_a_domain_that_names_a_path_outside(boot: dict[str, str]) -> None:
    # What only_declared_directories exists for: the spec's path, had the agent not resolved
    # it (host_paths None renders the spec as written), would reach the domain.
    # model_copy validates nothing: a path the schema would refuse gets through too.
    boot_files = virtualmachine.Boot.model_construct(**{"cmdline": None, **boot})
    vm = SMALL_VM.model_copy(update={"spec": SMALL_VM.spec.model_copy(update={"boot": boot_files})})
    xml = converter.render(vm, host=gen.host_environment(vm))
    with pytest.raises(AssertionError):
        gen.only_declared_directories(gen.Rendered(vm, gen.host_environment(vm), xml))
    assert isinstance(gen.render(vm), hostpaths.Refusal), "the agent's resolver refuses it"
