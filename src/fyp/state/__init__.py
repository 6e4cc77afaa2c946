"""What the engine knows, in memory: per-video statistics, per-user state, co-engagement.

Built by the learning loop from the event log (see :mod:`fyp.state.updater`); read by
the serving loop.
"""
