"""kubevisor Networks, decided purely: the host's data plane (`hostplan`, `hostdiff`) and
address management (`ipam` for addresses, `mac`, `vni`, over `ranges`; `allocation` for a
VM's interfaces)."""
