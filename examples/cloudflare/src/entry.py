from urllib.parse import parse_qs, urlparse

from workers import Response, WorkerEntrypoint, WorkflowEntrypoint
from workers.workflows import NonRetryableError


class OrderWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        items = event["payload"]["items"]

        @step.do("validate order")
        async def validate():
            if not items:
                raise NonRetryableError("an order needs at least one item")
            return {"count": len(items)}

        @step.do("price order", config={"retries": {"limit": 3, "delay": "1 second"}})
        async def price():
            return sum(item["qty"] * item["price"] for item in items)

        checked = await validate()
        total = await price()
        approval = await step.wait_for_event("approval", "approved", timeout="1 hour")
        await step.sleep("cool-off", "1 second")

        @step.do("confirm")
        async def confirm():
            return f"{self.env.GREETING}: {checked['count']} items, {total} total"

        message = await confirm()
        return {"total": total, "message": message, "by": approval["payload"]["by"]}


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        url = urlparse(request.url)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        if url.path == "/orders" and request.method == "POST":
            order = await request.json()
            instance = await self.env.MY_WORKFLOW.create(id=query.get("id"), params=order)
            return Response.json({"id": instance.id, "details": await instance.status()})
        if url.path == "/orders/approve" and request.method == "POST":
            instance = await self.env.MY_WORKFLOW.get(query["id"])
            await instance.send_event(type="approved", payload={"by": query.get("by", "ops")})
            return Response.json({"id": instance.id, "sent": True})
        if url.path == "/orders" and "id" in query:
            instance = await self.env.MY_WORKFLOW.get(query["id"])
            return Response.json({"id": instance.id, "details": await instance.status()})
        return Response("POST /orders, POST /orders/approve?id=, GET /orders?id=\n", status=404)

    async def scheduled(self, controller, env, ctx):
        await env.MY_WORKFLOW.create(params={"items": [{"sku": "NIGHTLY", "qty": 1, "price": 0}]})
