"""`hookline`: the command line over Hookline's REST API."""
