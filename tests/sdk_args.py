"""The keyword argument every call of the official SDK takes, typed so that ``**A`` is checked
against each method's own parameters (a plain dict would match any of them)."""

from typing import TypedDict


class AccountArg(TypedDict):
    account_id: str
