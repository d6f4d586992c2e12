"""The consumer: the Observable source, the facade and its lock, the reader and acker threads."""
