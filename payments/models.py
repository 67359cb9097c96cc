"""Tables of the payments app (added by the issue that builds it)."""
