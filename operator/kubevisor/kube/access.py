"""Who may do what: the SubjectAccessReview an aggregated API server asks, and where
kube-apiserver publishes how it vouches for its users.

The console API (`kubevisor.console.apiserver`) runs behind kube-apiserver's front proxy:
it reads the proxy's CA and header names from `authentication_config`, and asks `review`
whether the user the proxy names may use a VM's console subresource. `Kube` exposes both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from kubernetes.aio import client


@dataclass(frozen=True)
class User:
    """Who the front proxy says is calling (X-Remote-User / -Group / -Extra-*)."""

    name: str
    groups: tuple[str, ...] = ()
    extra: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Attributes:
    """The request a review asks about: `verb` on `resource/subresource` of one object
    (the fields of the API's ResourceAttributes, by their names)."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""


async def authentication_config(core: client.CoreV1Api) -> dict[str, str]:
    """kube-system/extension-apiserver-authentication: where kube-apiserver publishes
    its requestheader CA and header names for aggregated API servers."""
    config_map = await core.read_namespaced_config_map(
        "extension-apiserver-authentication", "kube-system"
    )
    return dict(config_map.data or {})


async def review(
    authorization: client.AuthorizationV1Api, user: User, attributes: Attributes
) -> tuple[bool, str]:
    """SubjectAccessReview: may `user` make the request of `attributes`? And why not."""
    request = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user.name,
            groups=list(user.groups),
            extra=user.extra or None,
            resource_attributes=client.V1ResourceAttributes(**dataclasses.asdict(attributes)),
        )
    )
    reply = await authorization.create_subject_access_review(request)
    status = reply.status
    if status is None:
        return False, "the SubjectAccessReview returned no status"
    return bool(status.allowed), str(status.reason or status.evaluation_error or "")
