"""The documentation site in headless Chromium (Debian's ``chromium``, driven by Playwright): served from
127.0.0.1, the home page and a guide load with their title and navigation, and no request leaves the
machine (no web fonts, no CDN scripts). A control page that asks for a CDN script proves the recorder
sees such a request. Opened from file://, the site's search finds pages, with nothing from the network."""

from __future__ import annotations

import contextlib
import functools
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from test_docs import build_site

playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra has it)")
pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]' (make setup installs it)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not found (apt-get install chromium; "
                                                         "`make test` does it where apt exists)")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    result = build_site(site)
    assert result.returncode == 0, result.stderr
    return site


@pytest.fixture(scope="module")
def served_site(built_site):
    site = built_site
    (site / "control.html").write_text(
        '<!doctype html><title>control</title><script src="https://cdn.jsdelivr.net/npm/x/x.js"></script>')
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def _page(tmp_path, local: tuple[str, ...]):
    """A headless Chromium page; ``(page, requests)``: every request it sends is recorded, those whose URL
    starts with one of ``local`` are served, any other is refused (never fetched)."""
    requests: list[str] = []

    def route(r):
        url = r.request.url
        requests.append(url)
        r.continue_() if url.startswith(local) else r.abort()

    with playwright.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                       headless=True, args=ARGS)
        try:
            context.route("**/*", route)
            yield context.new_page(), requests
        finally:
            context.close()


def _visit(base: str, paths: list[str], tmp_path) -> tuple[list[str], dict]:
    """Open each page; every request's URL (outside ones recorded, then refused), and what each page shows."""
    seen = {}
    with _page(tmp_path, (base + "/", "data:", "blob:")) as (page, requests):
        for path in paths:
            page.goto(f"{base}/{path}", wait_until="load")
            page.wait_for_load_state("networkidle")
            seen[path] = {
                "title": page.title(),
                "nav": page.locator("nav.md-nav--primary a.md-nav__link").all_text_contents(),
                "h1": page.locator("article h1").all_text_contents(),
            }
    return requests, seen


def test_site_pages_show_title_and_navigation_and_stay_on_the_machine(served_site, tmp_path):
    requests, seen = _visit(served_site, ["index.html", "guides/cats-vs-dogs.html"], tmp_path)
    outside = [url for url in requests if not url.startswith((served_site + "/", "data:", "blob:"))]
    assert not outside, f"the site asked the network for: {outside}"
    assert any(url.endswith(".css") for url in requests), requests  # the theme's own stylesheet, from here
    home, guide = seen["index.html"], seen["guides/cats-vs-dogs.html"]
    assert home["title"].startswith("vislab"), home
    assert "Cats vs dogs" in guide["title"], guide
    assert any("scratch, augmentation" in h for h in guide["h1"]), guide
    nav = " | ".join(text.strip() for text in home["nav"])
    for entry in ("Getting started", "Troubleshooting", "Benchmarks", "Command line", "Python API"):
        assert entry in nav, nav


def test_control_page_request_to_a_cdn_is_seen(served_site, tmp_path):
    requests, _ = _visit(served_site, ["control.html"], tmp_path)
    assert "https://cdn.jsdelivr.net/npm/x/x.js" in requests, requests


def test_search_works_from_the_file_system_without_the_network(built_site, tmp_path):
    # use_directory_urls is off so that the site opens from file://; its search needs the index as a script
    # and the Web Worker shim, both shipped in the site (the offline plugin's default shim is a CDN address)
    with _page(tmp_path, ("file://", "data:", "blob:", "about:")) as (page, requests):
        page.goto((built_site / "index.html").as_uri(), wait_until="load")
        page.locator("input.md-search__input").click()
        page.keyboard.type("time budget", delay=20)  # key by key, as the search box listens
        page.wait_for_selector("li.md-search-result__item", timeout=15_000)
        found = page.locator("li.md-search-result__item a").evaluate_all("links => links.map(a => a.href)")
    outside = [url for url in requests if not url.startswith(("file://", "data:", "blob:", "about:"))]
    assert not outside, f"the site asked the network for: {outside}"
    assert any(url.startswith("file://") and "training.html" in url for url in found), found
