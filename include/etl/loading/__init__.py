"""Loading exactly once: staging tables, the merge, the file ledger, table ownership, and the load
that runs them in one transaction."""
