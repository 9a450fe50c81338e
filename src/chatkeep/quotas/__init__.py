"""Fair limits per API key: request rate, open reply streams, failed authentication.

Each limiter is a bounded table in memory (its bound, its size and what it counts are
attributes), driven by the event loop; `chatkeep.quotas.middleware` applies the per-key
ones to every request, and the admission queue keeps each owner's share of its line.
"""
