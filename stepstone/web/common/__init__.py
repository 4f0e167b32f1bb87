"""What the API and the dashboard both use: who is asking (auth, subscribe tokens), what every
request passes first (guard, throttle, outage answers), the envelope, dates and cursors."""
