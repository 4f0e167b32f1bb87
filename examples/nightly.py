"""A nightly report fired by cron; the credentials step's output is sensitive (redacted)."""

from __future__ import annotations

from typing import Any

from stepstone import WorkflowEntrypoint


class NightlyReport(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        schedule = event.schedule or {}

        async def credentials() -> dict[str, str]:
            return {"api_key": "sk_live_example_only"}

        secret = await step.do("load credentials", credentials, config={"sensitive": "output"})

        async def build() -> dict[str, Any]:
            return {
                "for": schedule.get("scheduledTime"),
                "recipient": self.env["REPORT_RECIPIENT"],
                "authenticated": bool(secret["api_key"]),
            }

        report = await step.do("build report", build)
        await step.sleep("let the mail queue drain", "1 second")
        return report
