"""Helpers that drive real external tools (kubectl kustomize, hadolint, buildah)."""
