"""The Kubernetes API calls kubevisor's processes make, on the asyncio client."""
