"""The web page in headless Chromium (Debian's system browser, driven by Playwright): type a message,
see a streamed reply, see the heat map of that reply and of a sentence; a screenshot is saved."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (make browser installs Debian's chromium)"),
]


def test_page_chat_and_heatmap(served, tmp_path):
    from playwright.sync_api import sync_playwright

    base, cfg = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            logs: list[str] = []
            page.on("console", lambda m: logs.append(m.text))
            page.goto(base + "/")
            page.fill("#apikey", cfg.serve.api_key)
            page.dispatch_event("#apikey", "change")
            page.click("details.settings summary")
            page.fill("#top_p", "1")
            page.fill("#max_tokens", "16")
            for attempt in range(3):  # a random-init model may end its reply at once; say it again
                page.fill("#msg", "你好，今天天气很不错")
                page.click("#send")
                last = page.locator(".turn.assistant").nth(attempt)
                last.wait_for(state="attached", timeout=10_000)
                page.wait_for_function("n => document.querySelectorAll('.turn.assistant.done, .turn.error').length > n",
                                       arg=attempt, timeout=60_000)
                assert page.locator(".turn.error").count() == 0, (page.inner_text(".turn.error"), logs)
                if last.inner_text() != "(empty reply)":
                    break
            assert last.inner_text() not in ("", "(empty reply)")
            assert page.locator(".turn.user").first.inner_text() == "你好，今天天气很不错"
            page.wait_for_selector("#explain-last:not([disabled])", timeout=10_000)
            page.click("#explain-last")
            page.wait_for_selector('#heatmap[data-ready="1"]', timeout=60_000)
            assert page.locator("#heatmap .tok").count() == len("你好，今天天气很不错") + 2
            assert page.locator("#heatmap .reply").count() == 1

            page.fill("#explain-text", "今天很开心")
            page.click("#explain-btn")
            page.wait_for_selector('#heatmap[data-ready="1"] .tok >> nth=6', timeout=60_000)
            colours = page.eval_on_selector_all("#heatmap .tok", "els => els.map(e => e.style.background)")
            assert len(colours) == 7 and any(c != "rgb(255, 255, 255)" for c in colours)
            assert "prediction" in page.inner_text("#explain-meta")
            assert all(u.startswith(base) for u in requests), [u for u in requests if not u.startswith(base)]

            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            out = ROOT / "docs" / "results" / "serve"
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, out / "page.png")
        finally:
            browser.close()
