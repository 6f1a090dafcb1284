"""Every shell, Python and JSON example in README.md runs as written, against a live server.

The server is started as ``make run`` starts it (``serve --seed-sample`` on an empty data
directory), and the key it prints is the ``$KEY`` of the examples. Each example runs in a
working directory that holds the files the examples name (``calls.parquet``,
``exports/calls/``, ``dumps/``, ``project_prices.csv``), made from the shipped sample. The
only address rewritten is the server's: ``http://127.0.0.1:8000`` becomes the test
server's port. A block that cannot run here must be listed in ``NOT_RUN`` with the reason,
and the test fails when that list and the README disagree.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import polars as pl
import pytest

from engine.io import read_calls
from tests.live_server import STARTUP_SECONDS, clean_env, free_port, wait_until_healthy

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SAMPLE = ROOT / "data" / "sample" / "traces.jsonl.gz"
README_URL = "http://127.0.0.1:8000"
FENCE = re.compile(r"^```(sh|bash|python|json)\n(.*?)^```", re.M | re.S)
# (section heading, first line of the block) -> why it is not run here
NOT_RUN = {
    ("Quick start", "make run    # creates .venv, installs, serves http://127.0.0.1:8000 over "
     "data/ (sample traces seeded)"): "the two commands that build this environment and "
    "run this suite; the test starts the same server as `make run` does",
}  # fmt: skip


@dataclass(frozen=True)
class Example:
    heading: str
    lang: str
    code: str

    @property
    def key(self) -> tuple[str, str]:
        return self.heading, self.code.splitlines()[0]

    def __str__(self) -> str:
        return f"{self.heading}: {self.key[1][:60]}"


def examples() -> list[Example]:
    text = README.read_text()
    found = []
    for match in FENCE.finditer(text):
        headings = re.findall(r"^#+ (.+)$", text[: match.start()], re.M)
        found.append(Example(headings[-1].strip(), match.group(1), match.group(2)))
    return found


@dataclass(frozen=True)
class LiveServer:
    url: str
    key: str
    printed: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("readme-data")
    port = free_port()
    log_path = data_dir / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--data-dir", str(data_dir),
             "--seed-sample", "--port", str(port), "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, env=clean_env(),
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            # the sample is imported before the server starts
            wait_until_healthy(proc, url, log_path, STARTUP_SECONDS * 3)
            printed = log_path.read_text()
            key = re.search(r"^api key:\s+(\S+)$", printed, re.M).group(1)
            yield LiveServer(url, key, printed)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the examples name, made from the shipped sample."""
    work = tmp_path_factory.mktemp("readme-work")
    shutil.copytree(ROOT / "data", work / "data")
    calls = read_calls([SAMPLE]).collect()
    (work / "exports" / "calls").mkdir(parents=True)
    calls.write_parquet(work / "exports" / "calls" / "part-0.parquet")
    (work / "dumps").mkdir()
    shutil.copy(SAMPLE, work / "dumps" / "traces.jsonl.gz")
    pl.DataFrame(
        {
            "llm_id": ["gpt-4o-mini"],
            "effective_date": ["2024-01-01"],
            "prompt_token_cost": [1e-7],
            "completion_token_cost": [4e-7],
        }
    ).write_csv(work / "project_prices.csv")
    return work


def _env(server: LiveServer) -> dict[str, str]:
    env = clean_env()
    env["KEY"] = server.key
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(ROOT)
    return env


def _run(example: Example, server: LiveServer, workdir: Path) -> str:
    code = example.code.replace(README_URL, server.url)
    if example.lang == "json":
        res = httpx.post(server.url + "/trace/usage", content=code, auth=("api", server.key))
        assert res.status_code == 200, res.text
        return res.text
    if example.lang == "python":
        prelude = "import os\nKEY = os.environ['KEY']\n" if "KEY" in code else ""
        command = [sys.executable, "-c", prelude + code]
    else:
        command = ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(
        command, cwd=workdir, env=_env(server), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{example}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _errors_in(output: str) -> list[str]:
    """JSON answers in the output that are error bodies."""
    answers = []
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                answers.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return [json.dumps(a) for a in answers if isinstance(a, dict) and "reason" in a]


def test_the_not_run_list_names_readme_blocks() -> None:
    keys = {e.key for e in examples()}
    assert set(NOT_RUN) <= keys, set(NOT_RUN) - keys


@pytest.mark.parametrize("example", [e for e in examples() if e.key not in NOT_RUN], ids=str)
def test_readme_example_runs(example: Example, server: LiveServer, workdir: Path) -> None:
    output = _run(example, server, workdir)
    assert not _errors_in(output), output


def test_the_key_make_run_prints_works_with_its_own_curl_line(server: LiveServer) -> None:
    line = re.search(r"^\s+(curl .*)$", server.printed, re.M).group(1)
    done = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=60)
    answer = json.loads(done.stdout)
    assert "call_usage" in answer, done.stdout


def test_make_run_says_where_the_page_is_and_how_to_sign_in(server: LiveServer) -> None:
    assert f"Trace view: open {server.url}/ and sign in as user 'dev'" in server.printed
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
