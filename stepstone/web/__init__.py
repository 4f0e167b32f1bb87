"""The web front-ends: the API (``web.api``) and the dashboard (``web.dashboard``), siblings
over ``web.common``, what both share. They are given ``Operations`` and never import storage or
the engine; ``stepstone.server.build_app`` composes them."""
