"""Cloudflare's Python Workflows examples, verbatim, each with the page it came from.

cloudflare-docs ``src/content/docs/workflows/python/<page>.mdx`` and workerd
``src/workerd/server/tests/python/workflow-entrypoint/``; trailing spaces and overlong lines are
the pages' own. tests/cloudflare/test_docs_examples.py runs them.
"""

# ruff: noqa: E501, W293

# index.mdx, "Get Started" (also python-workers-api.mdx with `def run`, overview.mdx with
# `def on_run`): a class whose method body is only a comment.
INDEX_SKELETON = """\
from workers import WorkflowEntrypoint

class MyWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        # steps here
"""

API_SKELETON = """\
from workers import WorkflowEntrypoint

class MyWorkflow(WorkflowEntrypoint):
    def run(self, event, step):
        # steps here
"""

OVERVIEW_SKELETON = """\
from workers import WorkflowEntrypoint

class MyWorkflow(WorkflowEntrypoint):
    def on_run(self, event, step):
        # steps here
"""

# index.mdx, "For example, a Workflow may be defined as:"
INDEX_STARTER = """\
from workers import Response, WorkflowEntrypoint

class PythonWorkflowStarter(WorkflowEntrypoint):
    async def run(self, event, step):

        @step.do('step1')
        async def step_1():
            # does stuff
            print('executing step1')

        @step.do('step2')
        async def step_2():
            # does stuff
            print('executing step2')

        await await_step(step_1,step_2)

async def on_fetch(request, env):
    await env.MY_WORKFLOW.create()
    return Response("Hello world!")
"""

# index.mdx, its wrangler config (JSONC).
INDEX_WRANGLER = """\
{
	"$schema": "./node_modules/wrangler/config-schema.json",
	"name": "hello-python",
	"main": "src/entry.py",
	"compatibility_flags": [
		"python_workers",
		"experimental",
		"python_workflows"
	],
	"compatibility_date": "2024-03-29",
	"workflows": [
		{
			"name": "workflows-demo",
			"binding": "MY_WORKFLOW",
			"class_name": "PythonWorkflowStarter"
		}
	]
}
"""

# python-workers-api.mdx, "WorkflowStep" (and run.mdx with `async def on_run`).
API_FIRST_STEP = """\
from workers import WorkflowEntrypoint

class MyWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("my first step")
        async def my_first_step():
            # do some work
            return "Hello World!"

        await my_first_step()
"""

RUN_FIRST_STEP = """\
from workers import WorkflowEntrypoint

class MyWorkflow(WorkflowEntrypoint):
    async def on_run(self, event, step):
        @step.do("my first step")
        async def my_first_step():
            # do some work
            return "Hello World!"
        
        await my_first_step()
"""

# python-workers-api.mdx, step.sleep / step.sleep_until / step.wait_for_event (fragments).
API_SLEEP = """\
async def run(self, event, step):
    await step.sleep("my-sleep-step", "10 seconds")
"""

API_SLEEP_UNTIL = """\
async def run(self, event, step):
    await step.sleep_until("my-sleep-step", datetime.datetime.now() + datetime.timedelta(seconds=10))
"""

API_WAIT_FOR_EVENT = """\
async def run(self, event, step):
    await step.wait_for_event("my-wait-for-event-step", "my-event-type")
"""

# python-workers-api.mdx, "Rollback (Saga Pattern)" (the revision that has the section).
API_ROLLBACK = """\
class OrderWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        try:
            @step.with_rollback("create order")
            async def create_order():
                return await env.DB.orders.insert({"user_id": event["payload"]["user_id"], "items": event["payload"]["items"]})

            @create_order.undo
            async def undo_create_order(err, order):
                await env.DB.orders.delete(order["id"])

            order = await create_order()

            @step.with_rollback("charge payment")
            async def charge_payment():
                return await env.STRIPE.charges.create(amount=order["total"], customer=event["payload"]["user_id"])

            @charge_payment.undo
            async def undo_charge_payment(err, charge):
                await env.STRIPE.refunds.create(charge=charge["id"])

            await charge_payment()

            @step.do("send confirmation")
            async def send_confirmation():
                await env.EMAIL.send(to=event["payload"]["email"], template="order-confirmed", order_id=order["id"])

            await send_confirmation()

        except Exception as e:
            await step.rollback_all(e)
            raise
"""

# python-workers-api.mdx, "Error Handling" (fragment).
API_ERROR_HANDLING = """\
async def run(self, event, step):
    async def try_step(fn):
        try:
            return await fn()
        except Exception as e:
            print(f"Successfully caught {type(e).__name__}: {e}")

    @step.do("my_failing")
    async def my_failing():
        print("Executing my_failing")
        raise TypeError("Intentional error in my_failing")

    await try_step(my_failing)
"""

# python-workers-api.mdx, "NonRetryableError" (and run.mdx with `throw` for `raise`).
API_NON_RETRYABLE = """\
from workers.workflows import NonRetryableError

raise NonRetryableError(message)
"""

RUN_NON_RETRYABLE = """\
from workers.workflows import NonRetryableError

throw NonRetryableError(message)
"""

# python-workers-api.mdx, "Configure a workflow instance" (and run.mdx with `on_run`).
API_CONFIG = """\
class DemoWorkflowClass(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do('step-name', config={"retries": {"limit": 1, "delay": "10 seconds"}})
        async def first_step():
            # do some work
            pass
"""

RUN_CONFIG = """\
class DemoWorkflowClass(WorkflowEntrypoint):
    async def on_run(self, event, step):
        @step.do('step-name', config={"retries": {"limit": 1, "delay": "10 seconds"}})
        async def first_step():
            # do some work
            pass
"""

# python-workers-api.mdx, "Create an instance via binding".
API_CREATE_VIA_BINDING = """\
class Default(WorkerEntrypoint):
    async def fetch(self, request):
        instance = await self.env.MY_WORKFLOW.create()
        return Response.json({"status": "success"})
"""

# dag.mdx
DAG = """\
from workers import WorkflowEntrypoint

class MyWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("dependency a")
        async def step_a():
            # do some work
            return 10

        @step.do("dependency b")
        async def step_b():
            # do some work
            return 20

        @step.do("my final step", depends=[step_a, step_b], concurrent=True)
        async def my_final_step(result_a=0, result_b=0):
            # should return 30
            return result_a + result_b

        await my_final_step()
"""

# bindings.mdx: its wrangler.toml, the payload workflow, create, create_batch, get, send_event.
BINDINGS_WRANGLER = """\
#:schema node_modules/wrangler/config-schema.json
name = "workflows-starter"
main = "src/index.ts"
compatibility_date = "2024-10-22"
compatibility_flags = ["python_workflows", "python_workers"]

[[workflows]]
# name of your workflow
name = "workflows-starter"
# binding name env.MY_WORKFLOW
binding = "MY_WORKFLOW"
# this is class that extends the Workflow class in src/index.ts
class_name = "MyWorkflow"
"""

BINDINGS_PAYLOAD = """\
from pyodide.ffi import to_js

class DemoWorkflowClass(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do('step-name')
        async def first_step():
            payload = event["payload"]
            return payload
"""

BINDINGS_CREATE = """\
from pyodide.ffi import to_js
from js import Object

async def on_fetch(request, env, ctx):
    event = {"foo": "bar"}
    options = to_js({"params": event}, dict_converter=Object.fromEntries)
    await env.MY_WORKFLOW.create(options)
    return Response.json({"status": "success"})
"""

BINDINGS_CREATE_BATCH = """\
from pyodide.ffi import to_js
from js import Object

# Create a new batch of 3 Workflow instances, each with its own ID and pass params to the Workflow instances
listOfInstances = [
  to_js({ "id": "id-abc123", "params": { "hello": "world-0" } }, dict_converter=Object.fromEntries),
  to_js({ "id": "id-def456", "params": { "hello": "world-1" } }, dict_converter=Object.fromEntries),
  to_js({ "id": "id-ghi789", "params": { "hello": "world-2" } }, dict_converter=Object.fromEntries)
];

await env.MY_WORKFLOW.create_batch(listOfInstances);
"""

BINDINGS_GET = """\
instance = await env.MY_WORKFLOW.get("abc-123")

# FFI methods available for WorkflowInstance
await instance.status()
await instance.pause()
await instance.resume()
await instance.restart()
await instance.terminate()
"""

BINDINGS_SEND_EVENT = """\
from pyodide.ffi import to_js
from js import Object

await env.MY_WORKFLOW.send_event(to_js({ "type": "my-event-type", "payload": { "foo": "bar" } }, dict_converter=Object.fromEntries))
"""

# workerd's Python workflow tests: workflow.py (implicit dependencies) and workflow-old.py
# (legacy `depends`), at workerd 6552d999 (2026-08-22); and workflow-old.py as it was before
# ctx reached legacy steps.
WORKERD_IMPLICIT = """\
from workers import WorkflowEntrypoint


class WorkflowEntrypointExample(WorkflowEntrypoint):
    async def run(self, event, step):
        async def await_step(fn):
            try:
                return await fn()
            except TypeError as e:
                print(f"Successfully caught {type(e).__name__}: {e}")

        @step.do("my_failing")
        async def my_failing():
            print("Executing my_failing")
            raise TypeError("Intentional error in my_failing")

        @step.do("normal_step")
        async def normal_step(ctx):
            assert ctx["attempt"] == "1"
            return "done"

        await normal_step()

        @step.do()
        async def step_1():
            print("Executing step 1")
            return {"foo": "foo"}

        @step.do()
        async def step_2():
            print("Executing step 2")
            return {"bar": "bar"}

        # DAG example with error handling
        @step.do("step_3", concurrent=True)
        async def step_3():
            # this should never run because one of the dependencies will fail
            pass

        await await_step(step_3)

        # `step_1` and `step_2` run serially
        @step.do("step_4", concurrent=True)
        async def step_4(step_1, ctx, step_2):
            assert ctx["attempt"] == "1"
            print("Executing step 4 (depends on step 1 and step 2)")
            assert step_1["foo"] == "foo"
            assert step_2["bar"] == "bar"

        await await_step(step_4)

        # tests step memoization - steps 1 and 2 are already resolved
        @step.do("step_5", concurrent=False)
        async def step_5(ctx, step_1=(), step_2=()):
            print("Executing step 5 (depends on step 1 and step 2)")
            assert step_1["foo"] == "foo"
            assert step_2["bar"] == "bar"

            return step_1["foo"] + step_2["bar"]

        return await step_5()


async def test(ctrl, env, ctx):
    pass
"""

WORKERD_LEGACY = """\
from workers import WorkflowEntrypoint


class PythonWorkflowDepends(WorkflowEntrypoint):
    # Tests backward compatibility: legacy depends parameter with positional args
    # and ctx support in step callbacks.
    async def run(self, event, step):
        @step.do("step_1")
        async def step_1():
            # tests backwards compat with workflows that don't have ctx in the step callback
            print("Executing step 1")
            return "foo"

        @step.do("step_2")
        async def step_2(ctx):
            if ctx is not None:
                assert ctx["attempt"] == "1"
            print("Executing step 2")
            return "bar"

        @step.do("step_3", depends=[step_1, step_2], concurrent=True)
        async def step_3(result1=(), ctx=None, result2=()):
            if ctx is not None:
                assert ctx["attempt"] == "1"
            assert result1 == "foo"
            assert result2 == "bar"
            return result1 + result2

        return await step_3()


async def test(ctrl, env, ctx):
    pass
"""

WORKERD_LEGACY_NO_CTX = """\
from workers import WorkflowEntrypoint


class PythonWorkflowDepends(WorkflowEntrypoint):
    # The purpose of this workflow is testing that depends are no longer resolved
    #
    async def run(self, event, step):
        @step.do("step_1")
        async def step_1():
            # tests backwards compat with workflows that don't have ctx in the step callback
            print("Executing step 1")
            return "foo"

        @step.do("step_2")
        async def step_2():
            print("Executing step 2")
            return "bar"

        @step.do("step_3", depends=[step_1, step_2], concurrent=True)
        async def step_3(result1=(), result2=()):
            assert result1 == "foo"
            assert result2 == "bar"
            return result1 + result2

        return await step_3()


async def test(ctrl, env, ctx):
    pass
"""

# Other revisions of the pages (the docs' llms/markdown copies, which show what the site served).

# index.mdx as of 2026-02-09 (lastUpdated): the starter awaits its steps; `on_fetch(request, env)`;
# the wrangler.toml tab (with wrangler's `"$schema"` key).
INDEX_STARTER_2026_02 = """\
from workers import Response, WorkflowEntrypoint


class PythonWorkflowStarter(WorkflowEntrypoint):
    async def run(self, event, step):


        @step.do('step1')
        async def step_1():
            # does stuff
            print('executing step1')


        @step.do('step2')
        async def step_2():
            # does stuff
            print('executing step2')


        await step_1()
        await step_2()


async def on_fetch(request, env):
    await env.MY_WORKFLOW.create()
    return Response("Hello world!")
"""

INDEX_WRANGLER_TOML_2026_02 = """\
"$schema" = "./node_modules/wrangler/config-schema.json"
name = "hello-python"
main = "src/entry.py"
compatibility_flags = [ "python_workers", "experimental", "python_workflows" ]
compatibility_date = "2026-02-14"


[[workflows]]
name = "workflows-demo"
binding = "MY_WORKFLOW"
class_name = "PythonWorkflowStarter"
"""

# index.mdx as the site serves it now (the renderer's doubled blank lines undone).
INDEX_STARTER_LIVE = """\
from workers import Response, WorkflowEntrypoint, WorkerEntrypoint

class PythonWorkflowStarter(WorkflowEntrypoint):
    async def run(self, event, step):

        @step.do('step1')
        async def step_1():
            # does stuff
            print('executing step1')

        @step.do('step2')
        async def step_2():
            # does stuff
            print('executing step2')

        await step_1()
        await step_2()

class Default(WorkerEntrypoint):
    async def fetch(self, request):
        await self.env.MY_WORKFLOW.create()
        return Response("Hello world!")
"""

# dag.mdx as the site serves it since 2026-04-22: dependencies by parameter name.
DAG_LIVE = """\
from workers import Response, WorkflowEntrypoint, WorkerEntrypoint

class PythonWorkflowStarter(WorkflowEntrypoint):
    async def run(self, event, step):
        async def await_step(fn):
            try:
                return await fn()
            except TypeError as e:
                print(f"Successfully caught {type(e).__name__}: {e}")

        await step.sleep('demo sleep', '10 seconds')

        @step.do()
        async def dep_1():
            # does stuff
            print('executing dep1')
            return 'dep1'

        @step.do()
        async def dep_2():
            # does stuff
            print('executing dep2')
            return 'dep2'

        @step.do(concurrent=True)
        async def final_step(dep_1, dep_2):
            # does stuff
            print(f'{dep_1} {dep_2}')

        await await_step(final_step)

class Default(WorkerEntrypoint):
    async def fetch(self, request):
        await self.env.MY_WORKFLOW.create()
        return Response("Hello world!")
"""

# dag.mdx as served in January 2026: `depends=[...]`, and a `step.sleep` that is not awaited.
DAG_2026_01 = """\
from workers import Response, WorkflowEntrypoint


class PythonWorkflowStarter(WorkflowEntrypoint):
    async def run(self, event, step):
        async def await_step(fn):
            try:
                return await fn()
            except TypeError as e:
                print(f"Successfully caught {type(e).__name__}: {e}")


        step.sleep('demo sleep', '10 seconds')


        @step.do('dependency1')
        async def dep_1():
            # does stuff
            print('executing dep1')


        @step.do('dependency2')
        async def dep_2():
            # does stuff
            print('executing dep2')


        @step.do('demo do', depends=[dep_1, dep_2], concurrent=True)
        async def final_step(res1, res2):
            # does stuff
            print('something')


        await await_step(final_step)


async def on_fetch(request, env):
    await env.MY_WORKFLOW.create()
    return Response("Hello world!")
"""
