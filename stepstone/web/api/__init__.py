"""Cloudflare v4 compatible HTTP API: parse the request, call ``ops``, render the answer."""

from stepstone.web.api.app import create_api, surround
from stepstone.web.common.auth import AuthSettings

__all__ = ["AuthSettings", "create_api", "surround"]
