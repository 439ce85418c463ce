"""Every `curl` and every `registry` command of the README works as written on the demo data of
`make run`.

The README's commands are read from README.md itself (code blocks and inline code), run against
a live server on loopback with the demo data and the demo tokens of `make run` (the variables of
instance/demo-tokens.env), and must succeed; the pooled counts they ask for must be mostly
numbers, not withheld cells. The blocks of `registry` commands run line by line in a new shell
that has not activated the virtual env (as a second terminal in a clone has not).
"""

from __future__ import annotations

import csv
import io
import json
import re
import os
import shlex
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from conftest import get_database_of, migrate
from live import ROOT, own_database
from registry import create_app
from registry.services.window.disclosure import Policy
from registry.services.window.releases import cut_release
from registry.services.intake.synthetic import issue_demo_tokens, load_demo_data

README = (ROOT / "README.md").read_text()
README_HOST = "http://127.0.0.1:8000"


def readme_curls() -> list[str]:
    """The curl commands of the README, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        pending = ""
        for line in block.splitlines():
            pending += line.split("  #")[0] + "\n"
            if pending.endswith("\\\n"):
                continue
            try:
                shlex.split(pending)
            except ValueError:  # a quoted argument goes on over the next line
                continue
            command = pending.replace("\\\n", " ").strip()
            if command.startswith("curl "):
                commands.append(command)
            pending = ""
    commands += re.findall(r"`(curl [^`]+)`", README)
    return commands


def readme_registry_blocks() -> list[str]:
    """The README's code blocks that run the `registry` command (operator, steward)."""
    return [block for block in re.findall(r"```sh\n(.*?)```", README, re.S)
            if re.search(r"^registry ", block, re.M)]


def _parse(command: str, variables: dict[str, str]) -> dict[str, Any]:
    """A curl command as method, URL, headers and body (the options the README uses)."""
    words = shlex.split(re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], command))
    request: dict[str, Any] = {"method": "GET", "headers": {}, "body": None, "url": None}
    index = 1
    while index < len(words):
        word = words[index]
        if word == "-X":
            request["method"], index = words[index + 1], index + 2
        elif word == "-H":
            name, _, value = words[index + 1].partition(":")
            request["headers"][name.strip()] = value.strip()
            index += 2
        elif word == "-d":
            data = words[index + 1]
            request["body"] = ((ROOT / data[1:]).read_bytes() if data.startswith("@")
                               else data.encode())
            if request["method"] == "GET":
                request["method"] = "POST"
            index += 2
        elif word in ("-s", "-i"):
            index += 1
        elif word.startswith("http"):
            request["url"], index = word, index + 1
        else:
            raise AssertionError(f"the README's curl uses an option this test does not know: "
                                 f"{word}")
    return request


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[str, dict[str, str], str]]:
    """A live server on the demo data of `make run`, the demo tokens and the database's URL."""
    with own_database("readme", tmp_path_factory.mktemp("readme")) as url:
        migrate(url)
        app = create_app({"DATABASE_URL": url, "REGISTRY_RATE_LIMIT": "off"})
        with app.app_context():
            load_demo_data()
            cut_release(None, "demo data", Policy.from_config(app.config))  # as make run does
            tokens = issue_demo_tokens()
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}", tokens, url
        finally:
            server.shutdown()
            thread.join(timeout=10)
            get_database_of(app).engine.dispose()


def _published_share(status_body: bytes, content_type: str) -> float | None:
    """For a pooled answer: the share of its numbers that are published (not withheld)."""
    if content_type.startswith("text/csv"):
        lines = list(csv.DictReader(io.StringIO(status_body.decode())))
        return sum(line["suppressed"] == "false" for line in lines) / len(lines)
    body = json.loads(status_body)
    if "cells" in body:
        cells = body["cells"]
        return sum(cell["count"] is not None for cell in cells) / len(cells)
    if "groups" in body:
        intervals = [i for group in body["groups"] for i in group["intervals"]]
        return sum(not i.get("suppressed") for i in intervals) / len(intervals)
    return None


def test_the_readme_has_the_commands_a_newcomer_copies() -> None:
    commands = readme_curls()
    assert len(commands) >= 6
    assert any("records/batch" in c and "@docs/examples/batch.json" in c for c in commands)
    assert any("aggregates/counts" in c for c in commands)
    assert any("aggregates/remission" in c for c in commands)
    assert "../shared" not in README, "the README points outside the repository"


@pytest.mark.parametrize("command", readme_curls())
def test_each_readme_curl_works_on_the_demo_data(demo, command: str) -> None:
    base, tokens, _ = demo
    request = _parse(command, tokens)
    assert request["url"].startswith(README_HOST), request["url"]
    url = base + request["url"][len(README_HOST):]
    sent = urllib.request.Request(url, data=request["body"], method=request["method"],
                                  headers=request["headers"])
    try:
        with urllib.request.urlopen(sent, timeout=30) as answer:
            status, body = answer.status, answer.read()
            content_type = answer.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        raise AssertionError(f"{command}\nanswered {error.code}: {error.read()[:500]!r}") from None
    assert status < 300
    if "/aggregates/" in url:
        share = _published_share(body, content_type)
        assert share is not None and share >= 0.75, (command, share)


def _anchors(markdown: str) -> set[str]:
    """The anchors of a Markdown page's headings, as GitHub makes them (a repeated heading's
    anchor gets -1, -2, ...)."""
    anchors: set[str] = set()
    repeats: dict[str, int] = {}
    for title in re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.S), re.M):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        anchors.add(f"{slug}-{repeats[slug]}" if slug in repeats else slug)
        repeats[slug] = repeats.get(slug, 0) + 1
    return anchors


def test_the_readme_and_docs_link_only_to_pages_of_the_repository() -> None:
    """Each relative link of README.md and docs/ names a file of the repository (and a heading
    of it): a clone holds every page the README sends a reader to."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)]*))?\)", page.read_text()):
            if "://" in target:
                continue
            linked = (page.parent / target).resolve() if target else page
            assert linked.is_file() and ROOT in linked.parents, (page.name, target)
            if anchor and linked.suffix == ".md":
                assert anchor in _anchors(linked.read_text()), (page.name, target, anchor)


def test_the_readme_has_the_registry_commands_of_operators_and_stewards() -> None:
    blocks = readme_registry_blocks()
    assert len(blocks) >= 2
    assert all(block.startswith(". .venv/bin/activate") for block in blocks), (
        "a block of `registry` commands starts by activating the virtual env of the clone")


@pytest.mark.parametrize("block", readme_registry_blocks())
def test_each_readme_registry_block_works_in_a_new_shell(demo, tmp_path: Path,
                                                         block: str) -> None:
    """Each line exits 0, or is one the README says may be refused and prints the reason."""
    _, _, url = demo
    venv = Path(sys.prefix)
    if venv == Path(sys.base_prefix):
        pytest.skip("the tests do not run in a virtual env")
    clone = tmp_path / "clone"  # the clone's folder: its .venv, and where files are written
    clone.mkdir()
    (clone / ".venv").symlink_to(venv)
    lines = [line for line in block.splitlines() if line.strip()]
    assert not any(line.rstrip().endswith("\\") for line in lines)
    script = "".join(f'{line}\necho "@@exit=$?"\n' for line in lines)
    path = os.pathsep.join(folder for folder in os.environ["PATH"].split(os.pathsep)
                           if Path(folder).resolve() != (venv / "bin").resolve())
    env = {"PATH": path, "HOME": str(tmp_path), "LANG": "C.UTF-8", "DATABASE_URL": url}
    done = subprocess.run(["/bin/bash", "-c", script], cwd=clone, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600,
                          check=False)
    parts = re.split(r"^@@exit=(\d+)\n", done.stdout, flags=re.M)
    outputs, exits = parts[0::2], [int(code) for code in parts[1::2]]
    assert len(exits) == len(lines), done.stdout[-3000:]
    for line, code, output in zip(lines, exits, outputs):
        if code != 0:
            assert "refused, with the reason" in line, (line, code, output[-2000:])
            assert output.startswith("Error: ") and "release" in output, (line, output)
