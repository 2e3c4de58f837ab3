"""The offline demo: a tiny model zoo served by a local Hub and feed, run end to end."""
