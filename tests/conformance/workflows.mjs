// The JavaScript side of the conformance suite: each class is the twin of the Python class of
// the same name in twins.py, run by Cloudflare's local engine (wrangler dev). Keep the two in
// step: same step names, same configs, same outputs, same errors.
import { WorkflowEntrypoint } from "cloudflare:workers";
import { NonRetryableError } from "cloudflare:workflows";

// Small, explicit retry delays: the local engine's default is 1 s, production's 10 s.
const FAST = { retries: { limit: 3, delay: 10, backoff: "constant" } };

export class Outputs extends WorkflowEntrypoint {
  async run(event, step) {
    const obj = await step.do("object", async () => ({ n: event.payload.n, tags: ["a", "b"] }));
    const num = await step.do("number", async () => 41.5);
    const str = await step.do("string", async () => "plain text");
    const list = await step.do("list", async () => [1, "two", null, true]);
    const nothing = await step.do("null", async () => null);
    const flag = await step.do("bool", async () => false);
    return { obj, num, str, list, nothing, flag, params: event.payload };
  }
}

export class Counters extends WorkflowEntrypoint {
  async run(event, step) {
    const first = await step.do("x", async () => 1);
    const second = await step.do("x", async (ctx) => ctx.step.count);
    await step.sleep("x", 10);
    await step.do("y", async () => "y");
    const third = await step.do("x", async (ctx) => `${ctx.step.name}#${ctx.step.count}`);
    return [first, second, third];
  }
}

export class RetryThenSucceed extends WorkflowEntrypoint {
  async run(event, step) {
    return await step.do("flaky", FAST, async (ctx) => {
      if (ctx.attempt < 3) throw new TypeError(`attempt ${ctx.attempt} fails`);
      return { attempt: ctx.attempt };
    });
  }
}

export class NonRetryable extends WorkflowEntrypoint {
  async run(event, step) {
    await step.do("ok", async () => "fine");
    await step.do("doomed", FAST, async () => {
      throw new NonRetryableError("no way");
    });
    return "unreachable";
  }
}

export class RetriesExhausted extends WorkflowEntrypoint {
  async run(event, step) {
    await step.do("down", { retries: { limit: 2, delay: 10, backoff: "constant" } }, async () => {
      throw new TypeError("service down");
    });
  }
}

export class CaughtStepError extends WorkflowEntrypoint {
  async run(event, step) {
    try {
      await step.do("down", { retries: { limit: 1, delay: 10, backoff: "linear" } }, async () => {
        throw new TypeError("still down");
      });
    } catch (error) {
      return await step.do("fallback", async () => ({ caught: error.name, why: error.message }));
    }
  }
}

export class StepTimeout extends WorkflowEntrypoint {
  async run(event, step) {
    await step.do("slow", { retries: { limit: 0, delay: 10 }, timeout: 300 }, async () => {
      await new Promise((resolve) => setTimeout(resolve, 5000));
      return "too late";
    });
  }
}

export class Sensitive extends WorkflowEntrypoint {
  async run(event, step) {
    const secret = await step.do("secret", { sensitive: "output" }, async () => "hunter2");
    const open = await step.do("open", async () => secret.length);
    return { length: open };
  }
}

export class Sleeper extends WorkflowEntrypoint {
  async run(event, step) {
    await step.do("before", async () => "before");
    await step.sleep("nap", "100 milliseconds");
    return await step.do("after", async () => "after");
  }
}

export class SleepNames extends WorkflowEntrypoint {
  async run(event, step) {
    await step.sleep("nap", 10);
    await step.sleep("nap", 20);
    await step.sleep("nap", 10);
    return "rested";
  }
}

export class WaitEvent extends WorkflowEntrypoint {
  async run(event, step) {
    await step.do("before", async () => "ready");
    const got = await step.waitForEvent("approval", { type: "approve", timeout: "1 hour" });
    return { type: got.type, payload: got.payload };
  }
}

export class WaitTimeout extends WorkflowEntrypoint {
  async run(event, step) {
    try {
      await step.waitForEvent("never", { type: "nothing", timeout: "1 second" });
      return "delivered";
    } catch (error) {
      return { caught: error.name };
    }
  }
}

export class BufferedEvent extends WorkflowEntrypoint {
  async run(event, step) {
    await step.sleep("head start", "500 milliseconds");
    const first = await step.waitForEvent("first", { type: "tick", timeout: "1 hour" });
    const second = await step.waitForEvent("second", { type: "tick", timeout: "1 hour" });
    return [first.payload, second.payload];
  }
}

export class RunThrows extends WorkflowEntrypoint {
  async run(event, step) {
    await step.do("load", async () => ({ valid: false }));
    throw new TypeError("bad input");
  }
}

export class Defaults extends WorkflowEntrypoint {
  async run(event, step) {
    return await step.do("plain", async (ctx) => ctx.attempt);
  }
}

export class Saga extends WorkflowEntrypoint {
  async run(event, step) {
    // The engine records each handler as a rollback step; what it returns is not kept.
    const undo = async ({ stepName, output }) => `${stepName} undone (${output})`;
    await step.do("reserve", async () => "seat 7", { rollback: undo });
    await step.do("charge", async () => 100, { rollback: undo });
    await step.do("ship", FAST, async () => {
      throw new NonRetryableError("no courier");
    });
  }
}

export class Parallel extends WorkflowEntrypoint {
  async run(event, step) {
    const results = await Promise.all(
      ["a", "b", "c"].map((name, i) => step.do(`fetch ${name}`, async () => i * 10)),
    );
    return await step.do("sum", async () => results.reduce((x, y) => x + y, 0));
  }
}

export class Controlled extends WorkflowEntrypoint {
  async run(event, step) {
    const started = await step.do("start", async () => "started");
    const got = await step.waitForEvent("go", { type: "go", timeout: "1 hour" });
    const done = await step.do("finish", async () => got.payload);
    return { started, done };
  }
}

export default {
  async fetch() {
    return new Response("conformance oracle");
  },
};
