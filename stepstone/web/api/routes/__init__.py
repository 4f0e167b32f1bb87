"""Routers by resource; ``ALL`` is the order the app includes them in.

Fixed paths (``/workflows/settings``, ``/instances/batch``, ``/instances/terminate``) come
before the parameterised ones they would otherwise be mistaken for.
"""

from stepstone.web.api.routes.accounts import router as accounts_router
from stepstone.web.api.routes.hooks import router as hooks_router
from stepstone.web.api.routes.instances import router as instances_router
from stepstone.web.api.routes.operators import router as operators_router
from stepstone.web.api.routes.repair import router as repair_router
from stepstone.web.api.routes.versions import router as versions_router
from stepstone.web.api.routes.workflows import router as workflows_router

ALL = (
    accounts_router,
    instances_router,
    versions_router,
    workflows_router,
    operators_router,
    repair_router,
    hooks_router,
)
