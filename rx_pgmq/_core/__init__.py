"""Decisions without I/O, threads or locks: demand, reads, the ledger, ack batches, policies."""
