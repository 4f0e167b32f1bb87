"""The web front-ends' shared pieces; the API (``stepstone.web.api``) and the dashboard
(``stepstone.web.dashboard``) are its siblings above it."""
