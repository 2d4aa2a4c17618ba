"""The matcher service: events to one delivery message per subscribed webhook."""
