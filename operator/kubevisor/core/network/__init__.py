"""kubevisor Networks, decided purely: the host's data plane (`hostplan`, `hostdiff`)."""
