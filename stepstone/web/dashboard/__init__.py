"""The web dashboard at ``/dashboard``: server-rendered pages over ``ops``, live from the
instance event stream. See docs/dashboard.md."""

from stepstone.web.dashboard.app import create_dashboard, mount_dashboard

__all__ = ["create_dashboard", "mount_dashboard"]
