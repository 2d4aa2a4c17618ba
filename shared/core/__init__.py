"""Hookline's pure core: event catalog, matching, retry schedule, signing, SSRF rules."""
