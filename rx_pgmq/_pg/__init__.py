"""Everything that talks to PostgreSQL: SQL, connections, LISTEN, errors, the clients' SQL."""
