"""Developer tooling behind the Makefile (run supervisor, local servers); not shipped code."""
