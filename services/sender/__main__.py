"""`python -m services.sender`."""

from services.sender.main import main

main()
