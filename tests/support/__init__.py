"""Test-owned infrastructure: a real registry, a token server, image builders, a fault proxy."""
