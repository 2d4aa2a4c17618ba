"""`python -m services.relay`."""

from services.relay.relay import main

main()
