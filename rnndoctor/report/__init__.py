"""Reporters: a Diagnosis + Run into JSON, terminal text (and HTML)."""
