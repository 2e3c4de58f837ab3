"""The base every layer may use: errors, constants, clock, store, HTTP, the Hub adapter, logs.

Nothing here imports from ``config``, ``benchmarks``, ``watcher``, ``workers`` or ``supersede``.
"""
