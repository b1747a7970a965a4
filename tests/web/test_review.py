"""The review queue in Debian's Chromium against a real `edgetrust node serve` process, with
Chromium's virtual authenticator (CDP WebAuthn, CTAP2, internal transport, user verification):
a reviewer key made in the page, passkey registration and sign-in, a verdict signed by both and
logged, the aggregated result shown; a cancelled ceremony, a second verdict (409) and a
replayed verdict envelope (409) refused with their one-line messages; no console errors."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgetrust.human.tasks import make_task, sign_task
from edgetrust.identity import Identity
from edgetrust.receipts import parse_bundle
from tests.node.conftest import Server, free_port
from tests.web.test_browser import ARTIFACTS, CHROMIUM, sync_api
from tests.web.world import XSS, World

pytestmark = pytest.mark.slow
assert Path(CHROMIUM).exists()  # test_browser skips the module otherwise


@contextlib.contextmanager
def _node(world: World, home: Path) -> Iterator[Server]:
    """A node over a copy of the world's log whose relying party is ``localhost``."""
    shutil.copytree(world.home, home)
    port = free_port()
    origin = f"http://localhost:{port}"
    args = ["node", "serve", "--rate", "0", "--host", "127.0.0.1", "--port", str(port)]
    env = {
        **os.environ,
        "EDGETRUST_HOME": str(home),
        "EDGETRUST_RP_ID": "localhost",
        "EDGETRUST_RP_ORIGIN": origin,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgetrust", *args, "--home", str(home)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    srv = Server(origin, proc, home, args)
    try:
        for _ in range(600):
            try:
                if httpx.get(origin + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def server(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A node whose relying party is ``localhost`` at its own origin, with two review tasks."""
    with _node(world, tmp_path_factory.mktemp("review") / "node") as srv:
        author = Identity.generate("review-author")
        subject = hashlib.sha256(parse_bundle(world.bundle.read_bytes()).leaf_data()).hexdigest()
        for task in (
            make_task(subject, "Is this digit classified correctly?", ["yes", "no"]),
            make_task("ab" * 32, "Question " + XSS, ["ok", XSS]),
        ):
            resp = httpx.post(
                srv.url + "/v1/human/tasks", content=sign_task(author, task).to_json()
            )
            assert resp.status_code == 200, resp.text
        yield srv


@pytest.fixture
def page(server: Server) -> Iterator[tuple[object, object, str, list[str]]]:
    """A fresh browser context with a virtual authenticator; (page, cdp, authenticator, problems)."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 900})
            pg = context.new_page()
            problems: list[str] = []
            pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            pg.on("pageerror", lambda e: problems.append(str(e)))
            cdp = context.new_cdp_session(pg)
            cdp.send("WebAuthn.enable")
            auth = cdp.send(
                "WebAuthn.addVirtualAuthenticator",
                {
                    "options": {
                        "protocol": "ctap2",
                        "transport": "internal",
                        "hasResidentKey": True,
                        "hasUserVerification": True,
                        "isUserVerified": True,
                        "automaticPresenceSimulation": True,
                    }
                },
            )["authenticatorId"]
            yield pg, cdp, auth, problems
        finally:
            browser.close()


def _open(pg: object, server: Server) -> str:
    assert pg.goto(server.url + "/review").status == 200  # type: ignore[attr-defined]
    pg.locator("#did", has_text="did:key:z").wait_for()  # type: ignore[attr-defined]
    return str(pg.inner_text("#did"))  # type: ignore[attr-defined]


def _status(pg: object, text: str) -> None:
    try:
        pg.locator("#status", has_text=text).wait_for(timeout=20_000)  # type: ignore[attr-defined]
    except sync_api.TimeoutError:
        pytest.fail(f"no {text!r}: {pg.inner_text('#reviewer')}")  # type: ignore[attr-defined]


def test_review_full_flow(page: tuple[object, object, str, list[str]], server: Server) -> None:
    pg, _, _, problems = page
    did = _open(pg, server)
    assert pg.title() != "1"  # type: ignore[attr-defined]  # injected markup inert
    assert "Question " + XSS in pg.inner_text("main")  # type: ignore[attr-defined]
    first = pg.locator("article.task", has_text="classified correctly")  # type: ignore[attr-defined]
    assert "AI output" in first.inner_text() and "class " in first.inner_text()
    # No answer control outside a passkey session.
    assert first.locator("form.answer").count() == 0 and "Sign in with your passkey" in (
        first.inner_text()
    )
    pg.click("#register")  # type: ignore[attr-defined]
    _status(pg, "Registered (log entry")
    pg.click("#login")  # type: ignore[attr-defined]
    _status(pg, "Signed in")
    # The DID the browser derived is the one the node logged as a reviewer.
    rep = httpx.get(server.url + f"/v1/human/reviewers/{did}")
    assert rep.status_code == 200, rep.text
    sent: list[bytes] = []
    pg.on(  # type: ignore[attr-defined]
        "request",
        lambda r: sent.append(r.post_data_buffer) if r.url.endswith("/v1/human/verdicts") else None,
    )
    first.locator("form.answer").wait_for()
    first.locator("input[value=no]").check()
    first.locator("button").click()
    first.locator(".mine", has_text="Verdict logged at entry").wait_for()
    # The page fetches the task's aggregate after the verdict is logged: wait for it.
    first.locator(".result", has_text="no (posterior").wait_for()
    pg.screenshot(path=str(ARTIFACTS / "review.png"), full_page=True)  # type: ignore[attr-defined]

    # A reload shows the logged verdict and its aggregate, server-rendered.
    pg.reload()  # type: ignore[attr-defined]
    assert (
        "no (posterior 1.000, 1 reviewer(s))"
        in pg.locator(  # type: ignore[attr-defined]
            "article.task", has_text="classified correctly"
        )
        .locator(".result")
        .inner_text()
    )
    assert did in pg.inner_text("#rep + table, #rep ~ table")  # type: ignore[attr-defined]
    agg = httpx.get(server.url + "/v1/human/aggregate").json()["results"]
    assert [r["answer"] for r in agg] == ["no"] and agg[0]["reviewers"] == [did]

    # The same signed verdict sent again (a replay) is refused; nothing new is logged.
    assert len(sent) == 1
    size = httpx.get(server.url + "/v1/log").json()["size"]
    replay = httpx.post(server.url + "/v1/human/verdicts", content=sent[0])
    assert replay.status_code == 409 and "replay" in replay.json()["message"]
    assert httpx.get(server.url + "/v1/log").json()["size"] == size
    assert not problems, problems


def test_second_verdict_shows_409(
    page: tuple[object, object, str, list[str]], server: Server
) -> None:
    pg, _, _, problems = page
    _open(pg, server)
    pg.click("#register")  # type: ignore[attr-defined]
    _status(pg, "Registered")
    pg.click("#login")  # type: ignore[attr-defined]
    _status(pg, "Signed in")
    task = pg.locator("article.task", has_text="Question")  # type: ignore[attr-defined]
    task.locator("button").click()
    task.locator(".mine", has_text="Verdict logged").wait_for()
    task.locator("input[type=radio] >> nth=1").check()
    task.locator("button").click()
    pg.wait_for_selector("#problem:not([hidden])")  # type: ignore[attr-defined]
    assert "the first verdict counts" in pg.inner_text("#problem")  # type: ignore[attr-defined]
    pg.screenshot(path=str(ARTIFACTS / "review-409.png"), full_page=True)  # type: ignore[attr-defined]
    assert problems and all("status of 409" in m for m in problems), problems


def test_cancelled_ceremony_shows_an_error(
    page: tuple[object, object, str, list[str]], server: Server
) -> None:
    pg, cdp, auth, problems = page
    _open(pg, server)
    # The authenticator refuses user verification: the browser rejects the ceremony.
    cdp.send(  # type: ignore[attr-defined]
        "WebAuthn.setUserVerified", {"authenticatorId": auth, "isUserVerified": False}
    )
    pg.click("#register")  # type: ignore[attr-defined]
    pg.wait_for_selector("#problem:not([hidden])")  # type: ignore[attr-defined]
    assert "cancelled" in pg.inner_text("#problem")  # type: ignore[attr-defined]
    _status(pg, "Not signed in")
    # Signing in with a DID that never registered: the node's 404 message, one line.
    pg.click("#login")  # type: ignore[attr-defined]
    pg.locator("#problem", has_text="not a registered").wait_for()  # type: ignore[attr-defined]
    assert all("status of 404" in m for m in problems), problems


def test_published_status_and_gold_reveal(
    page: tuple[object, object, str, list[str]], world: World, tmp_path: Path
) -> None:
    """Per task: its published aggregate, current then stale; a revealed gold task's answer."""
    from edgetrust.human.authenticator import SoftAuthenticator
    from edgetrust.human.client import HumanClient

    pg, _, _, problems = page
    with _node(world, tmp_path / "node") as srv:

        def person() -> HumanClient:
            auth = SoftAuthenticator(rp_id="localhost", origin=srv.url)
            return HumanClient(srv.url, Identity.generate(), auth)

        author, crowd = person(), [person() for _ in range(2)]
        for c in crowd:
            c.register()
        plain = author.add_task("cd" * 32, "Is the label a cat?", ["yes", "no"])["digest"]
        added = author.add_task("ef" * 32, "Gold " + XSS, ["ok", XSS], gold=XSS)
        gold, secret = added["digest"], added["goldSecret"]
        for c in crowd:
            c.review(plain, "yes")
            c.review(gold, XSS)
        current = author.publish_aggregate(plain)["index"]
        stale = author.publish_aggregate(gold)["index"]
        revealed = author.reveal(gold, secret["answer"], secret["salt"])["index"]

        assert pg.goto(srv.url + "/review").status == 200  # type: ignore[attr-defined]
        cat = pg.locator("article.task", has_text="a cat?")  # type: ignore[attr-defined]
        cat.locator(".published", has_text=f"published at entry {current}: current").wait_for()
        assert cat.locator(".gold").count() == 0  # an unrevealed or ordinary task: no flag
        star = pg.locator("article.task", has_text="Gold ")  # type: ignore[attr-defined]
        star.locator(".gold", has_text="gold task: answer " + XSS).wait_for()
        star.locator(".published", has_text=f"stale (later: {revealed})").wait_for()
        assert stale < revealed
        assert pg.title() != "1"  # type: ignore[attr-defined]  # the escaped answer is inert

        # A verdict from the browser makes the cat task's published aggregate stale, in place.
        pg.locator("#did", has_text="did:key:z").wait_for()  # type: ignore[attr-defined]
        pg.click("#register")  # type: ignore[attr-defined]
        _status(pg, "Registered (log entry")
        pg.click("#login")  # type: ignore[attr-defined]
        _status(pg, "Signed in")
        cat.locator("form.answer").wait_for()  # the signed-in page, reloaded
        assert star.locator("form.answer").count() == 0  # revealed gold takes no verdicts
        cat.locator("button:enabled").wait_for()
        cat.locator("button").click()
        cat.locator(".mine", has_text="Verdict logged at entry").wait_for()
        mine = cat.locator(".mine").inner_text()
        index = int(mine.split("entry ", 1)[1].split(":", 1)[0])
        cat.locator(".published", has_text=f"entry {current}: stale (later: {index})").wait_for()
        cat.locator(".result", has_text="3 reviewer(s)").wait_for()
        pg.screenshot(path=str(ARTIFACTS / "review-published.png"), full_page=True)  # type: ignore[attr-defined]
        rows = httpx.get(srv.url + f"/v1/human/tasks/{plain}/aggregate").json()
        assert rows["published"]["later"] == [index]
    assert not problems, problems
