"""Test oracles and helpers shared by the tests (never imported by production code)."""
