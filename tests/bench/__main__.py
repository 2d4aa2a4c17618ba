"""`python -m tests.bench [--quick] [--phases a,b] [--profile sender]`."""

from tests.bench.runner import main

if __name__ == "__main__":
    main()
