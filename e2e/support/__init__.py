"""Shared helpers for e2e tests (real control plane, real registry, real skopeo)."""
