"""Serial consoles: the user-facing aggregated API (`apiserver`), the agent's endpoint
(`agentserver`), the copying between hops (`bridge`), and what they share.

The path, each hop authenticated by the one before it (docs/cli.md, "console"):
`kubevisor console` -> kube-apiserver (authenticates the user) -> the aggregated API in
the controller process (trusts the front proxy's client certificate, authorizes with a
SubjectAccessReview) -> the agent of the VM's host (mTLS: only the API's client
certificate, only VMs bound to that host) -> the host's hypervisor driver
(`Hypervisor.open_console`: libvirt's virDomainOpenConsole; drivers without consoles
refuse).

Sits between the processes (agent, handlers) and the drivers: it speaks to consoles
through the `Hypervisor` protocol (`drivers.base`) and imports no driver.
"""
