"""A data pipeline: fetch sources in parallel, merge, and keep the CSV as a byte stream.

Payload: ``{"sources": ["alpha", "beta", "gamma"]}``; an empty or missing list is bad input.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from stepstone import NonRetryableError, WorkflowEntrypoint


class DataPipeline(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        sources = (event["payload"] or {}).get("sources")

        async def check() -> list[str]:
            if not isinstance(sources, list) or not sources:
                raise NonRetryableError("payload.sources must be a non-empty list")
            return [str(s) for s in sources]

        names = await step.do("check input", check)

        async def fetch(name: str) -> list[dict[str, Any]]:
            async def rows() -> list[dict[str, Any]]:
                return [{"source": name, "row": i, "value": len(name) * i} for i in range(3)]

            result: list[dict[str, Any]] = await step.do(f"fetch {name}", rows)
            return result

        fetched = await asyncio.gather(*(fetch(name) for name in names))

        async def to_csv() -> AsyncIterator[bytes]:
            async def lines() -> AsyncIterator[bytes]:
                yield b"source,row,value\n"
                for rows in fetched:
                    for row in rows:
                        yield f"{row['source']},{row['row']},{row['value']}\n".encode()

            return lines()

        csv = await step.do("render csv", to_csv)
        size = sum([len(chunk) async for chunk in csv])
        return {"sources": len(names), "rows": sum(len(r) for r in fetched), "csv_bytes": size}
