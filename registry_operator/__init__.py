"""registry-operator: in-cluster image registries with rotating push and pull credentials."""

__version__ = "0.1.0"
