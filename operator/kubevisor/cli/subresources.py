"""The console API's VM subresources as the CLI reaches them: the kubeconfig's URL, TLS
settings and credentials (`Api`), and one plain GET (`get`) for the commands that read
rather than attach: `screenshot`, `diagnose`, `console --log` (docs/cli.md).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp

from kubevisor.console import protocol
from kubevisor.kube.cluster import Cluster


def tls_context(settings: Any) -> ssl.SSLContext:
    """The kubeconfig's TLS settings (CA, client certificate, insecure-skip-tls-verify)."""
    context = ssl.create_default_context(cafile=settings.ssl_ca_cert or None)
    if not settings.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.cert_file:
        context.load_cert_chain(settings.cert_file, settings.key_file or None)
    return context


class Api:
    """The kubeconfig's URL, TLS context and headers for one VM's subresources."""

    def __init__(self, cluster: Cluster, vm: str) -> None:
        settings = cluster.api.configuration
        self.base = str(settings.host).rstrip("/")
        self.namespace = cluster.namespace
        self.vm = vm
        self.context = tls_context(settings)
        self.headers: dict[str, str] = {}
        token = settings.get_api_key_with_prefix("authorization")
        if token:
            self.headers["Authorization"] = str(token)

    def url(self, subresource: str) -> str:
        return self.base + protocol.api_path(self.namespace, self.vm, subresource)

    async def refusal(self, reply: aiohttp.ClientResponse) -> str:
        body = await reply.read()
        return protocol.status_message(
            body, f"the API server refused the request ({reply.status} {reply.reason})"
        )

    async def get(
        self, subresource: str, params: Mapping[str, str] | None = None
    ) -> tuple[bytes | None, str]:
        """(the body, "") of a GET of `subresource`, or (None, why it was refused);
        raises aiohttp.ClientError or OSError when the API server cannot be reached."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                self.url(subresource), params=params, ssl=self.context, headers=self.headers
            ) as reply,
        ):
            if reply.status != 200:
                return None, await self.refusal(reply)
            return await reply.read(), ""
