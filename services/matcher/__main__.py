"""`python -m services.matcher`."""

from services.matcher.matcher import main

main()
