"""Implementations of the public operators in :mod:`rx_pgmq.operators`."""
