"""``stepstone tokens``: API tokens, managed in the database directly.

These commands bootstrap authentication, so they cannot need a token themselves: whoever can
open the database (``--db``) can manage its tokens.

Without ``--db`` they use the store ``stepstone serve`` uses when started from this folder, and
only if it exists: a token written to a new, empty store would be one no server checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from stepstone import auth
from stepstone.cli import render
from stepstone.cli.client import JsonOption, fail, usage
from stepstone.cli.server_cmds import (
    DB_ENV,
    DEFAULT_DB,
    describe_store,
    explained_startup,
    open_store,
    redact,
    sqlite_file,
)
from stepstone.errors import StepstoneError
from stepstone.storage.base import Storage, TokenRecord

app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)

T = TypeVar("T")

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar=DB_ENV,
        help="The server's database URL (default: the store `stepstone serve` uses in this"
        f" folder, {DEFAULT_DB}, if it exists).",
        show_default=False,
    ),
]

# Short names for Cloudflare's permission groups.
ALIASES = {
    "read": auth.SCRIPTS_READ,
    "write": auth.SCRIPTS_WRITE,
    "tail": auth.TAIL_READ,
}


def permission_names(given: list[str]) -> list[str]:
    names = []
    for item in given:
        name = ALIASES.get(item.lower(), item)
        if name not in auth.PERMISSIONS:
            choices = ", ".join([*ALIASES, *(repr(p) for p in auth.PERMISSIONS)])
            usage(f"unknown permission {item!r}; choose from {choices}", "--permission")
        names.append(name)
    return names


def choose_store(db: str | None, *, may_create: bool) -> str:
    """The store to manage: ``db`` as given, or serve's default here if that file exists.

    A SQLite file that does not exist is created only when named explicitly and the command
    creates a token (bootstrapping a server that is about to start on it).
    """
    chosen = DEFAULT_DB if db is None else db
    file = sqlite_file(chosen)
    if file is None or file.exists():
        return chosen
    where = Path.cwd() / file
    if db is None:
        fail(
            f"no store here: `stepstone serve` started in this folder would use {where},"
            f" which does not exist. Pass the server's database with --db (or {DB_ENV}),"
            " e.g. --db sqlite:////path/to/data/stepstone.db, or run this in the folder"
            " the server runs in",
            2,
        )
    if not may_create:
        fail(f"no store at {where} ({redact(chosen)}); pass the server's database with --db", 2)
    render.warn(f"{where} does not exist; creating a new store there")
    return chosen


def run_with_store(db: str, job: Callable[[Storage], Awaitable[T]]) -> T:
    # Stderr, so --json output stays parseable: which store was changed or read.
    render.err_console.print(f"store: {describe_store(db)}", markup=False, highlight=False)

    async def main() -> T:
        storage = await open_store(db)
        try:
            return await job(storage)
        finally:
            await storage.close()

    try:
        with explained_startup(db):
            return asyncio.run(main())
    except StepstoneError as exc:
        fail(str(exc))


def token_json(token: TokenRecord) -> dict[str, object]:
    return {
        "id": token.id,
        "name": token.name,
        "permissions": list(token.permissions),
        "accounts": None if token.accounts is None else list(token.accounts),
        "created_on": render.when(token.created_on),
        "revoked_on": render.when(token.revoked_on) if token.revoked_on else None,
    }


@app.command()
def create(
    name: Annotated[str, typer.Option(help="A label for the token.", show_default=False)],
    permission: Annotated[
        list[str],
        typer.Option(
            help="Permission group, repeatable: read, write, tail, or the full Cloudflare name"
            " ('Workers Scripts Write').",
            show_default=False,
        ),
    ],
    account: Annotated[
        list[str] | None,
        typer.Option(help="Limit the token to this account (repeatable; default: all)."),
    ] = None,
    db: StoreOption = None,
    json_: JsonOption = False,
) -> None:
    """Create a token and print its secret (shown only this once)."""
    permissions = permission_names(permission)
    store = choose_store(db, may_create=True)

    async def job(storage: Storage) -> tuple[TokenRecord, str]:
        return await auth.create_token(
            storage, name=name, permissions=permissions, accounts=account or None
        )

    record, secret = run_with_store(store, job)
    if json_:
        render.print_json({**token_json(record), "token": secret})
        return
    render.info(f"Created token {record.id} ({name}) with {', '.join(record.permissions)}")
    render.console.print("Secret (store it now; it is not shown again):")
    render.console.print(secret, markup=False, soft_wrap=True)


@app.command("list")
def list_tokens(db: StoreOption = None, json_: JsonOption = False) -> None:
    """List tokens (never their secrets)."""
    tokens = run_with_store(choose_store(db, may_create=False), auth.list_tokens)
    if json_:
        render.print_json([token_json(t) for t in tokens])
    elif not tokens:
        render.warn("there are no API tokens")
    else:
        render.tokens_table(tokens)


@app.command()
def revoke(
    token_id: Annotated[str, typer.Argument(help="Token id (from `tokens list`).")],
    db: StoreOption = None,
    json_: JsonOption = False,
) -> None:
    """Revoke a token; requests carrying it are refused from now on."""
    store = choose_store(db, may_create=False)

    async def job(storage: Storage) -> bool:
        return await auth.revoke_token(storage, token_id)

    revoked = run_with_store(store, job)
    if json_:
        render.print_json({"id": token_id, "revoked": revoked})
    if not revoked:
        fail(f"no active token with id {token_id!r}")
    if not json_:
        render.info(f"Token {token_id} has been revoked")
