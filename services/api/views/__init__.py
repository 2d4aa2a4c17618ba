"""The API's views, one module per concept; each exposes `routes`."""
