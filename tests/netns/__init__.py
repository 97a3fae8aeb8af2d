"""Tests that build real network namespaces (root only; skipped elsewhere by the conftest)."""
