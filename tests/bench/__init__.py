"""`make bench`: the whole pipeline against a local receiver, with a report (DESIGN.md §8)."""
