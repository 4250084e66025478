"""Serial consoles: the user-facing aggregated API (`api`), the agent's endpoint (`agent`),
the libvirt stream between them and the guest (`serial`), and what they share.

The path, each hop authenticated by the one before it (docs/cli.md, "console"):
`kubevisor console` -> kube-apiserver (authenticates the user) -> the aggregated API in
the controller process (trusts the front proxy's client certificate, authorizes with a
SubjectAccessReview) -> the agent of the VM's host (mTLS: only the API's client
certificate, only VMs bound to that host) -> libvirt virDomainOpenConsole.

Sits between the processes (agent, handlers) and the drivers: it imports the libvirt
driver's event loop and nothing above it.
"""
