"""The shipped sample traces (``data/sample/``), made by a seeded generator.

``python -m service.sample [OUT_DIR]`` rewrites ``traces.jsonl.gz`` byte for byte: one Weave
call per line, project ``demo/agents``:

* ``eval-*``: an evaluation of 3,200 examples, each an agent that plans, calls tools and
  calls LLMs (over 20,000 calls, OTel style: parents carry no usage of their own);
* ``chat-*``: small agent conversations over several models, with cache tokens;
* ``sdk-*``: a trace logged the way Weave's SDK logs it (each parent's summary.usage is the
  sum of its children's), the case ``summary_usage: "auto"`` exists for;
* ``live-*``: a trace whose root and one LLM call are still running (no ``ended_at``).
"""

from __future__ import annotations

import datetime as dt
import gzip
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

PROJECT = "demo/agents"
FILE_NAME = "traces.jsonl.gz"
T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
LLM_OP = "openai.chat.completions.create"
ANTHROPIC_OP = "anthropic.Messages.create"
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet-20240620", "o1-mini")
EVAL_EXAMPLES = 3_200


def _op(name: str) -> str:
    return f"weave:///{PROJECT}/op/{name}:v0"


class _Trace:
    """Builds the calls of one trace with increasing start times."""

    def __init__(self, rng: random.Random, trace_id: str, start: dt.datetime) -> None:
        self.rng, self.trace_id, self.clock = rng, trace_id, start
        self.calls: list[dict[str, Any]] = []
        self.counter = 0

    def call(
        self,
        op: str,
        parent: dict[str, Any] | None,
        inputs: dict[str, Any],
        usage: dict[str, Any] | None = None,
        output: Any = None,
        running: bool = False,
    ) -> dict[str, Any]:
        self.counter += 1
        self.clock += dt.timedelta(milliseconds=self.rng.randint(5, 400))
        call = {
            "project_id": PROJECT,
            "id": f"{self.trace_id}-{self.counter:05d}",
            "trace_id": self.trace_id,
            "parent_id": parent["id"] if parent else None,
            "op_name": op,
            "started_at": self.clock.isoformat(),
            "attributes": {"weave": {"client_version": "0.53.6", "source": "python-sdk"}},
            "inputs": inputs,
        }
        if not running:
            ended = self.clock + dt.timedelta(milliseconds=self.rng.randint(50, 3000))
            call["ended_at"] = ended.isoformat()
            call["output"] = output
            call["summary"] = {"usage": usage} if usage else {}
        self.calls.append(call)
        return call

    def llm(self, parent: dict[str, Any], model: str | None = None, running: bool = False):
        rng = self.rng
        model = model or rng.choice(MODELS)
        prompt, completion = rng.randint(200, 4000), rng.randint(20, 800)
        if model.startswith("claude"):
            usage = {
                "input_tokens": prompt,
                "output_tokens": completion,
                "requests": 1,
                "cache_read_input_tokens": rng.choice([0, 0, 1024, 2048]),
                "cache_creation_input_tokens": rng.choice([0, 0, 0, 512]),
            }
            op = ANTHROPIC_OP
        else:
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "requests": 1,
            }
            op = LLM_OP
        inputs = {"model": model, "messages": [{"role": "user", "content": "..."}]}
        return self.call(op, parent, inputs, {model: usage}, {"choices": 1}, running)


def _eval_trace(rng: random.Random) -> list[dict[str, Any]]:
    trace = _Trace(rng, "eval-0001", T0)
    root = trace.call(_op("Evaluation.evaluate"), None, {"dataset": "qa-3200"})
    for example in range(EVAL_EXAMPLES):
        row = trace.call(_op("Evaluation.predict_and_score"), root, {"example": example})
        agent = trace.call(_op("Agent.run"), row, {"question": f"q{example}"})
        trace.llm(agent, "gpt-4o-mini")  # plan
        for _ in range(rng.choice([0, 1, 1, 2])):
            tool = trace.call(_op("search"), agent, {"query": f"q{example}"}, output=["doc"])
            if rng.random() < 0.3:
                trace.llm(tool, "gpt-4o-mini")  # rerank
        trace.llm(agent, rng.choice(["gpt-4o", "claude-3-5-sonnet-20240620"]))  # answer
        scorer = trace.call(_op("correctness_scorer"), row, {"example": example})
        if rng.random() < 0.5:
            trace.llm(scorer, "o1-mini")
    return trace.calls


def _chat_traces(rng: random.Random) -> Iterator[dict[str, Any]]:
    for n in range(6):
        trace = _Trace(rng, f"chat-{n:04d}", T0 + dt.timedelta(hours=2 + n))
        root = trace.call(_op("chat"), None, {"session": n})
        for _turn in range(rng.randint(2, 6)):
            step = trace.call(_op("Agent.step"), root, {})
            for _ in range(rng.randint(1, 3)):
                trace.llm(step)
        yield from trace.calls


def _sdk_trace(rng: random.Random) -> list[dict[str, Any]]:
    """Parents carry the sum of their children's usage, as Weave's SDK writes them."""
    trace = _Trace(rng, "sdk-0001", T0 + dt.timedelta(hours=12))
    root = trace.call(_op("pipeline"), None, {})
    agent = trace.call(_op("agent"), root, {})
    leaves = [trace.llm(agent, "gpt-4o"), trace.llm(agent, "gpt-4o"), trace.llm(root, "gpt-4o")]
    for parent, children in ((agent, leaves[:2]), (root, [agent, leaves[2]])):
        total: dict[str, int] = {}
        for child in children:
            for name, value in child["summary"]["usage"]["gpt-4o"].items():
                total[name] = total.get(name, 0) + value
        parent["summary"] = {"usage": {"gpt-4o": total}}
    return trace.calls


def _live_trace(rng: random.Random) -> list[dict[str, Any]]:
    trace = _Trace(rng, "live-0001", T0 + dt.timedelta(hours=20))
    root = trace.call(_op("Agent.run"), None, {"question": "still thinking"}, running=True)
    trace.llm(root, "gpt-4o")
    trace.llm(root, "claude-3-5-sonnet-20240620", running=True)
    return trace.calls


def sample_calls(seed: int = 7) -> list[dict[str, Any]]:
    """Every sample call, in file order."""
    rng = random.Random(seed)
    return [*_eval_trace(rng), *_chat_traces(rng), *_sdk_trace(rng), *_live_trace(rng)]


def write_sample(out_dir: Path, seed: int = 7) -> Path:
    """Write ``traces.jsonl.gz`` (deterministic bytes) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FILE_NAME
    body = b"".join(orjson.dumps(call) + b"\n" for call in sample_calls(seed))
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
        out.write(body)
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("data/sample")
    print(write_sample(target))
