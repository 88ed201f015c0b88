"""Helpers shared by tests (not fixtures: plain functions that build real test assets)."""
