"""The web front-ends' shared pieces; the API (``stepstone.api``) and the dashboard
(``stepstone.dashboard``) are its siblings above it."""
