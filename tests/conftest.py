"""Shared test setup.

The database fixtures (``pgmq_dsn``, ``pgmq``, ``pgmq_queue``) come from the ``rx_pgmq.testing``
plugin, loaded through its ``pytest11`` entry point once the package is installed
(``pip install -e ".[dev]"``). ``pytester`` runs inner pytest sessions in the plugin tests.
"""

pytest_plugins = ("pytester",)
