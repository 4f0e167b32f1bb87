"""The ``stepstone`` command: servers and workers, and wrangler's workflow commands.

``workflows`` and ``instances`` talk to a server over the REST API; ``tokens`` and ``migrate``
open the database directly (they bootstrap the server and its authentication).
"""

from __future__ import annotations

import typer

from stepstone.cli import approvals as approvals_cmd
from stepstone.cli import audit as audit_cmd
from stepstone.cli import bulk as bulk_cmd
from stepstone.cli import (
    export,
    hooks,
    instances,
    repair,
    replay,
    server_cmds,
    tokens,
    workflows,
)

app = typer.Typer(
    name="stepstone",
    help="Stepstone: Cloudflare Workflows, self-hosted.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
server_cmds.register(app)
app.add_typer(workflows.app, name="workflows")
app.add_typer(instances.app, name="instances")
# wrangler spells it `workflows instances ...`; both work.
workflows.app.add_typer(instances.app, name="instances")
app.add_typer(tokens.app, name="tokens")
replay.register(app)
export.register(instances.app)
bulk_cmd.register(instances.app)
approvals_cmd.register(instances.app)
audit_cmd.register(app)

repair.register(instances.app)
app.add_typer(hooks.app, name="hooks")


def main() -> None:
    app()
