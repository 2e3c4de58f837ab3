"""The HTML report of every verdict in the store."""
