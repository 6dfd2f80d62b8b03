"""Test-only helpers that real users never need (reference engines, harnesses)."""
