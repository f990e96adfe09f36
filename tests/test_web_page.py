"""The results page over HTTP: the real app served by uvicorn on a real socket,
reading real reviews from a redis-server of the test's own."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.dismiss import SeriesIdentity
from tests.fixtures.service.helpers import RedisServer, fresh_redis, own_redis
from tests.test_web_fixtures import TOKEN, Seeded, Served, seeded, served_app
from workers.dismissals import store_for

__all__ = ["fresh_redis", "own_redis"]

pytestmark = pytest.mark.integration
LIST = "linux-mm"


@pytest.fixture
def site(tmp_path: Path, fresh_redis: RedisServer) -> Iterator[tuple[Seeded, Served]]:
    with (
        seeded(tmp_path, fresh_redis.url(), LIST) as seed,
        served_app(
            fresh_redis.url(), seed.config, tmp_path / "app.log", BOT_WEB_TOKEN=TOKEN
        ) as app,
    ):
        yield seed, app


def _series(app: Served, key: str) -> httpx.Response:
    return httpx.get(f"{app.url}/series", params={"list": LIST, "key": key}, timeout=30)


def test_the_index_lists_each_series_with_its_status_and_the_rule_counts(
    site: tuple[Seeded, Served],
) -> None:
    seed, app = site
    page = httpx.get(app.url + "/", timeout=30)
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    html = page.text
    assert f"<h1>{LIST}</h1>" in html
    assert html.count('class="status reviewed"') == 2
    assert 'class="status waiting"' in html  # the series whose patches never came
    assert f'href="https://lore.kernel.org/all/{seed.v1.cover_id}/"' in html
    assert "<code>MMLC002</code>" in html  # per-rule precision


def test_the_series_page_shows_base_findings_and_links_the_versions(
    site: tuple[Seeded, Served],
) -> None:
    seed, app = site
    v1 = _series(app, seed.v1.cover_id).text
    assert 'class="status reviewed"' in v1
    assert "tree: <code>none (diff only)</code>" in v1
    assert "<code>MMLC002</code>" in v1 and 'class="question"' in v1
    assert f"/series?list={LIST}&amp;key={seed.v2.cover_id.replace('@', '%40')}" in v1
    assert f'href="https://lore.kernel.org/all/{seed.v1.patch_ids[1]}/"' in v1
    v2 = _series(app, seed.v2.cover_id).text
    assert re.search(r'<tr class="still-present"><td>still present</td><td><code>MMLC002', v2)
    assert "log in to dismiss" in v2
    assert _series(app, "nope@example.org").status_code == 404


def test_hostile_mail_text_is_escaped(site: tuple[Seeded, Served]) -> None:
    seed, app = site
    result = seed.state.result(LIST, seed.v1.cover_id)
    evil = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
    result["key"] = "evil@example.org"
    result["review"]["series"]["name"] = "mm: " + evil
    for f in result["review"]["findings"]:
        f["message"] = evil
        f["evidence"] = [evil]
        f["function"] = evil
    seed.state.update_series(LIST, "evil@example.org", {"state": "complete", "name": evil})
    seed.state.commit_review(LIST, "evil@example.org", result, None, None, 1.0)
    for page in (_series(app, "evil@example.org"), httpx.get(app.url + "/", timeout=30)):
        assert page.status_code == 200
        assert "<script>" not in page.text and "<img" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_dismissing_needs_the_token_a_session_and_the_form_token(
    site: tuple[Seeded, Served],
) -> None:
    seed, app = site
    fp = next(
        f["fingerprint"]
        for f in seed.state.result(LIST, seed.v2.cover_id)["review"]["findings"]
        if f["rule_id"] == "MMLC002"
    )
    form = {"list": LIST, "key": seed.v2.cover_id, "fingerprint": fp, "reason": "fine"}
    with httpx.Client(base_url=app.url, timeout=30) as c:
        assert c.post("/dismiss", data=form).status_code == 403  # no session
        assert c.post("/login", data={"token": "wrong", "name": "x"}).status_code == 403
        ok = c.post("/login", data={"token": TOKEN, "name": "Grace", "next": "//evil.example"})
        assert ok.status_code == 303 and ok.headers["location"] == "/"
        cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert c.post("/dismiss", data=form).status_code == 403  # no form token
        page = c.get("/series", params={"list": LIST, "key": seed.v2.cover_id}).text
        m = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert m is not None
        form["csrf"] = m.group(1)
        other = c.post("/dismiss", data=form, headers={"Origin": "https://evil.example"})
        assert other.status_code == 403
        assert store_for(seed.state).dismissals() == []
        done = c.post("/dismiss", data=form)
        assert done.status_code == 303 and done.headers["location"].endswith(f"#f-{fp}")
        (d,) = store_for(seed.state).dismissals()
        assert (d.target, d.by, d.reason) == (fp, "Grace (results page)", "fine")
        # the dismissal shows on v2 and on v1 (the same work), with who and when
        for key in (seed.v2.cover_id, seed.v1.cover_id):
            html = c.get("/series", params={"list": LIST, "key": key}).text
            assert "dismissed by Grace (results page) on " in html
        metrics = c.get("/metrics").text
        assert 'bot_rule_findings_dismissed{rule="MMLC002"} 1.0' in metrics


def _csrf(c: httpx.Client, key: str) -> str:
    page = c.get("/series", params={"list": LIST, "key": key}).text
    m = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert m is not None
    return m.group(1)


def test_undoing_a_dismissal_needs_the_same_and_the_finding_counts_again(
    site: tuple[Seeded, Served],
) -> None:
    seed, app = site
    v2 = seed.v2.cover_id
    fp = next(
        f["fingerprint"]
        for f in seed.state.result(LIST, v2)["review"]["findings"]
        if f["rule_id"] == "MMLC002"
    )
    store = store_for(seed.state)
    elsewhere = SeriesIdentity("other@example.org", "eve@example.org", ("mm: other",))
    unrelated = store.add("MMLC001", elsewhere, reason="", by="Eve", everywhere=False)
    with httpx.Client(base_url=app.url, timeout=30) as c:
        # not logged in: the dismissals are listed, without an undo button
        d = store.add(fp, store.find_series(v2).series, reason="fine", by="Ada", everywhere=False)
        page = c.get("/series", params={"list": LIST, "key": v2}).text
        assert "dismissed by Ada on " in page and 'action="/undismiss"' not in page
        form = {"list": LIST, "key": v2, "id": str(d.id)}
        assert c.post("/undismiss", data=form).status_code == 403  # no session
        assert c.post("/login", data={"token": TOKEN, "name": "Grace"}).status_code == 303
        assert c.post("/undismiss", data=form).status_code == 403  # no form token
        page = c.get("/series", params={"list": LIST, "key": v2}).text
        assert page.count(f'name="id" value="{d.id}"') == 2  # by the finding, in the table
        form["csrf"] = _csrf(c, v2)
        other = c.post("/undismiss", data=form, headers={"Origin": "https://evil.example"})
        assert other.status_code == 403
        stale = c.post("/undismiss", data=form | {"csrf": "0" * 64})
        assert stale.status_code == 403
        # only a dismissal the series' page shows, and one that exists
        assert c.post("/undismiss", data=form | {"id": str(unrelated.id)}).status_code == 404
        assert c.post("/undismiss", data=form | {"id": "999"}).status_code == 404
        assert c.post("/undismiss", data=form | {"id": "x"}).status_code == 400
        assert c.post("/undismiss", data=form | {"key": "nope@x"}).status_code == 404
        assert [x.id for x in store.dismissals()] == [unrelated.id, d.id]
        metrics = c.get("/metrics").text
        assert 'bot_rule_findings_dismissed{rule="MMLC002"} 1.0' in metrics
        assert "(1 dismissed)" in c.get("/").text

        done = c.post("/undismiss", data=form)
        assert done.status_code == 303 and done.headers["location"].endswith("#findings")
        assert [x.id for x in store.dismissals()] == [unrelated.id]
        assert c.post("/undismiss", data=form).status_code == 404  # already undone
        # the finding counts again: on v2 and v1 (the same work), the index and /metrics
        for key in (v2, seed.v1.cover_id):
            html = c.get("/series", params={"list": LIST, "key": key}).text
            assert "dismissed by" not in html and 'class="finding dismissed"' not in html
            assert f'name="fingerprint" value="{fp}"' in html  # "not a bug" offered again
        assert "dismissed)" not in c.get("/").text
        metrics = c.get("/metrics").text
        assert 'bot_rule_findings_dismissed{rule="MMLC002"} 0.0' in metrics
        assert 'bot_rule_findings_raised{rule="MMLC002"} 1.0' in metrics


def test_dismissing_is_off_unless_configured(tmp_path: Path, fresh_redis: RedisServer) -> None:
    with (
        seeded(tmp_path, fresh_redis.url(), LIST, web=False) as seed,
        served_app(
            fresh_redis.url(), seed.config, tmp_path / "app.log", BOT_WEB_TOKEN=TOKEN
        ) as app,
        httpx.Client(base_url=app.url, timeout=30) as c,
    ):
        assert c.get("/login").status_code == 403
        assert c.post("/login", data={"token": TOKEN}).status_code == 403
        form = {"list": LIST, "key": seed.v1.cover_id, "fingerprint": "0" * 16}
        assert c.post("/dismiss", data=form).status_code == 403
        store = store_for(seed.state)
        d = store.add("MMLC002", store.find_series(seed.v1.cover_id).series, reason="",
                      by="Ada", everywhere=False)  # fmt: skip
        undo = {"list": LIST, "key": seed.v1.cover_id, "id": str(d.id)}
        assert c.post("/undismiss", data=undo).status_code == 403
        assert [x.id for x in store.dismissals()] == [d.id]
        page = c.get("/series", params={"list": LIST, "key": seed.v1.cover_id}).text
        assert "log in to dismiss" not in page and 'action="/dismiss"' not in page
        assert "dismissed by Ada on " in page and 'action="/undismiss"' not in page
        assert json.loads(c.get("/healthz").text) == {"status": "ok"}
