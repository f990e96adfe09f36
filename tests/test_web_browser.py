"""The results page in a real browser: Debian's chromium driven by Playwright (no
browser download), against the real app served by uvicorn and a real redis-server.

Load a reviewed series, follow its link to v2, log in, dismiss a finding, reload:
the finding is shown as dismissed; undo the dismissal, reload: the finding is back.
BOT_WEB_SCREENSHOTS=DIR saves screenshots there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.service.helpers import RedisServer, fresh_redis, own_redis
from tests.test_web_fixtures import TOKEN, seeded, served_app
from workers.dismissals import store_for

__all__ = ["fresh_redis", "own_redis"]

pytestmark = pytest.mark.integration
LIST = "linux-mm"
CHROMIUM = os.environ.get("BOT_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A persistent chromium context on a fresh profile directory."""
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1200, "height": 900},
        )
        context.set_default_timeout(60_000)
        try:
            yield context
        finally:
            context.close()


def _shot(page: Any, name: str) -> None:
    where = os.environ.get("BOT_WEB_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(where) / name), full_page=True)


def test_follow_v1_to_v2_dismiss_a_finding_see_it_dismissed_undo_and_see_it_back(
    tmp_path: Path, fresh_redis: RedisServer, browser: Any
) -> None:
    with (
        seeded(tmp_path, fresh_redis.url(), LIST) as seed,
        served_app(fresh_redis.url(), seed.config, tmp_path / "a.log", BOT_WEB_TOKEN=TOKEN) as app,
    ):
        page = browser.new_page()
        page.goto(app.url + "/")
        _shot(page, "results-index.png")
        # the reviewed v1, from the list
        page.locator(f'a[href*="{seed.v1.cover_id.split("@")[0]}"]').first.click()
        page.wait_for_url("**/series?**")
        assert page.locator("#status").inner_text() == "reviewed"
        assert page.locator("article.finding").count() == 1
        # to v2 by its link
        page.locator("a.version.later").click()
        page.wait_for_url(f"**key={seed.v2.cover_id.replace('@', '%40')}*")
        finding = page.locator("article.finding", has_text="MMLC002")
        assert finding.count() == 1 and "dismissed" not in (finding.get_attribute("class") or "")
        # log in, come back to v2, dismiss
        page.get_by_role("link", name="log in to dismiss").click()
        page.fill('input[name="name"]', "Grace")
        page.fill('input[name="token"]', TOKEN)
        page.get_by_role("button", name="log in").click()
        page.wait_for_url(f"**key={seed.v2.cover_id.replace('@', '%40')}*")
        finding.locator('input[name="reason"]').fill("the walk never fails here")
        finding.get_by_role("button", name="not a bug").click()
        page.wait_for_load_state()
        page.reload()
        finding = page.locator("article.finding", has_text="MMLC002")
        assert "dismissed" in (finding.get_attribute("class") or "").split()
        assert "dismissed by Grace (results page) on " in finding.inner_text()
        assert finding.locator("form.dismiss").count() == 0
        assert "the walk never fails here" in page.locator("#dismissals").inner_text()
        _shot(page, "results-series-v2-dismissed.png")
        (d,) = store_for(seed.state).dismissals()
        assert d.by == "Grace (results page)"
        # undo it from the dismissals table: the finding is back, "not a bug" offered again
        page.locator(f"#d-{d.id}").get_by_role("button", name="undo").click()
        page.wait_for_load_state()
        page.reload()
        finding = page.locator("article.finding", has_text="MMLC002")
        assert "dismissed" not in (finding.get_attribute("class") or "").split()
        assert "dismissed by" not in finding.inner_text()
        assert finding.get_by_role("button", name="not a bug").count() == 1
        assert "none" in page.locator("#dismissals").inner_text()
        assert store_for(seed.state).dismissals() == []
