"""The inbound edge: `POST /hooks/in/{id}` turns authenticated calls into platform events."""
