"""What a Cloudflare Python Workers project needs to run unchanged on Stepstone.

``config`` reads wrangler.toml / wrangler.jsonc / wrangler.json and ``.dev.vars``; ``sdk`` is
the ``workers`` module such projects import, which ``shim`` puts in place; ``worker_app``
serves the project's ``WorkerEntrypoint`` (its ``fetch`` and ``scheduled`` handlers).
"""

# Where ``stepstone serve`` answers the Worker's fetch (wrangler dev's 8787 is the REST API's).
DEFAULT_WORKER_PORT = 8788
