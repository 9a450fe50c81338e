"""The operations on conversations: what the HTTP surfaces call, and nothing HTTP-shaped.

`conversations` (create, list, get, update, delete, history), `replies` (send, resume,
cancel, the generation of one reply) with `context_reader` (the bounded context of a
reply) and `reply_commit` (its commit, tried again when storage fails), `pipeline` (the
one generation path shared by the durable send and the stateless passthrough),
`summaries` (older turns condensed in the background through a bounded `job_queue`).
"""
