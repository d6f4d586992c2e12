"""``python -m rx_pgmq.cli``: the ``rx-pgmq`` command."""

from rx_pgmq.cli import main

main()
