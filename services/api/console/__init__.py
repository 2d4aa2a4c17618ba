"""The web console (DESIGN.md section 10): server-rendered pages under `/console/` where
webhook owners see, test and fix their webhooks, signed in with an API token."""

from services.api.console.app import PREFIX, create_console

__all__ = ["PREFIX", "create_console"]
