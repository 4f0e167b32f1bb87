"""A workflow written exactly as for Cloudflare Python Workflows."""

from workers import WorkflowEntrypoint
from workers.workflows import NonRetryableError


class Greeter(WorkflowEntrypoint):
    async def run(self, event, step):  # type: ignore[no-untyped-def]
        @step.do()
        async def greet():  # type: ignore[no-untyped-def]
            name = event["payload"]["name"]
            if not name:
                raise NonRetryableError("no name")
            return f"hello {name}"

        return await greet()
