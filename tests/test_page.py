"""The search page of ``braid serve`` in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
driven by selenium): type a query, see results, switch pipeline, open the explanation, compare every figure
on the page with the API's answer; the side-by-side lists and their shared marks; keys; phone width.

The index is adi (bm25 + sparse + dense with the real models from ../shared) when present, else the toy
collection with tiny random models. Skipped, with the reason, when Chromium, chromedriver or selenium is
missing (``.ci/run`` installs them).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium; the dev extra has it)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from tests.conftest import SHARED  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason="headless browser tests need Chromium and chromedriver: apt-get install chromium chromium-driver"),
]
TOKEN = "page-test-token-0123456789"


@pytest.fixture(scope="module")
def hybrid_index(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("faiss")
    from braid.data.beir import BeirDataset
    from braid.retrieval.build.builder import BuildOptions, build_index

    root = tmp_path_factory.mktemp("page")
    models = SHARED / "models"
    if (SHARED / "data" / "adi").is_dir() and (models / "splade-tiny").is_dir() and (models / "all-MiniLM-L6-v2").is_dir():
        data, sparse, dense = SHARED / "data" / "adi", models / "splade-tiny", models / "all-MiniLM-L6-v2"
        queries = list(BeirDataset(data).queries("test").values())[:3]
    else:
        from tests.serve_support import DOCS, QUERIES
        from tests.test_sharded import make_tiny_bert

        from tests.conftest import write_jsonl

        data = root / "toy"
        write_jsonl(data / "corpus.jsonl", DOCS)
        write_jsonl(data / "queries.jsonl", [{"_id": f"q{i}", "text": q} for i, q in enumerate(QUERIES)])
        sparse, dense = make_tiny_bert(root / "splade", mlm=True), make_tiny_bert(root / "dense", mlm=False, seed=1)
        queries = QUERIES[:3]
    options = BuildOptions(retrievers=("bm25", "sparse", "dense"), progress=False, sparse_model=str(sparse), dense_model=str(dense), max_length=128)
    build_index(data, root / "index", options)
    return root / "index", queries


def start(index: Path, **kwargs):
    from braid.retrieval.serve.app import create_app
    from tests.serve_support import LiveServer

    return LiveServer(create_app(index, **kwargs))


@pytest.fixture(scope="module")
def server(hybrid_index):
    live = start(hybrid_index[0])
    yield live
    live.stop()


def browser(width: int, height: int):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    if width < 500:  # headless Chromium keeps windows at least 500 px wide: emulate the phone's viewport instead
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 1}})
    try:
        return webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    except Exception as exc:  # noqa: BLE001 - a browser that cannot start is a reason to skip, said plainly
        pytest.skip(f"headless Chromium did not start: {type(exc).__name__}: {str(exc).splitlines()[0]}")


@pytest.fixture()
def page():
    driver = browser(1280, 900)
    yield driver
    driver.quit()


def wait(driver, predicate, what: str, timeout: float = 60):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: predicate(d), message=what)


def api_search(url: str, query: str, engine: str, headers: dict | None = None) -> dict:
    r = httpx.post(url + "/search", json={"query": query, "k": 10, "retriever": engine, "fields": True, "explain": True}, headers=headers or {}, timeout=60)
    r.raise_for_status()
    return r.json()


def shown_ids(driver) -> list[str]:
    return [li.get_attribute("data-id") for li in driver.find_elements(By.CSS_SELECTOR, "#hits .hit")]


def search_on_page(driver, query: str) -> None:
    box = driver.find_element(By.ID, "q")
    box.clear()
    box.send_keys(query, Keys.ENTER)


def check_explanations(driver, api: dict) -> None:
    """Every figure of every hit's explanation on the page equals the API's (exact value and its 4-decimal text)."""
    items = driver.find_elements(By.CSS_SELECTOR, "#hits .hit")
    assert len(items) == len(api["hits"])
    for item, hit in zip(items, api["hits"]):
        assert item.get_attribute("data-id") == hit["id"] and float(item.get_attribute("data-score")) == hit["score"]
        details = item.find_element(By.CSS_SELECTOR, "details.why")
        if details.get_attribute("open") is None:
            details.find_element(By.TAG_NAME, "summary").click()
        assert float(details.get_attribute("data-fused")) == hit["explain"]["fused_score"]
        rows = details.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert [r.get_attribute("data-retriever") for r in rows] == [p["name"] for p in hit["explain"]["retrievers"]]
        for row, part in zip(rows, hit["explain"]["retrievers"]):
            for key in ("rank", "score", "normalized", "fill", "contribution", "share"):
                raw = row.get_attribute(f"data-{key}")
                want = part[key]
                assert (raw == "" if want is None else float(raw) == want), (hit["id"], part["name"], key, raw, want)
            assert row.find_element(By.CSS_SELECTOR, "td.contribution").text == format(part["contribution"], ".4f")
            assert row.find_element(By.CSS_SELECTOR, "td.rank").text == ("absent" if part["rank"] is None else f"#{part['rank']}")
        assert details.find_element(By.CSS_SELECTOR, "td.fused").text == format(hit["explain"]["fused_score"], ".4f")


def test_query_results_explanation_and_pipeline_switch(server, hybrid_index, page):
    _, queries = hybrid_index
    page.get(server.url + "/")
    wait(page, lambda d: Select(d.find_element(By.ID, "engine")).first_selected_option.get_attribute("value") == "hybrid", "the engine list from /info")
    assert not page.find_element(By.ID, "token-row").is_displayed()  # no token asked of an open server
    engines = [o.get_attribute("value") for o in Select(page.find_element(By.ID, "engine")).options]
    assert {"hybrid", "hybrid-rrf", "bm25", "sparse", "dense"} <= set(engines)

    query = queries[0]
    search_on_page(page, query)
    api = api_search(server.url, query, "hybrid")
    wait(page, lambda d: shown_ids(d) == [h["id"] for h in api["hits"]], "the fused hits of the API")
    first = page.find_element(By.CSS_SELECTOR, "#hits .hit")
    assert first.find_element(By.TAG_NAME, "h2").text.startswith("1. ")
    marks = [m.text.lower() for m in page.find_elements(By.CSS_SELECTOR, "#hits mark")]
    assert marks and all(m in query.lower() for m in marks)  # highlighted words are query words
    page.find_element(By.CSS_SELECTOR, "#hits details.why summary").click()
    bars = page.find_elements(By.CSS_SELECTOR, "#hits details.why .bar")
    assert max(b.size["width"] for b in bars) > 10  # share bars are drawn (sized through CSSOM, as the CSP allows)
    check_explanations(page, api)
    for hit in api["hits"]:  # the explanation is exact: contributions add up to the fused score
        assert sum(p["contribution"] for p in hit["explain"]["retrievers"]) == pytest.approx(hit["explain"]["fused_score"], abs=1e-9)

    Select(page.find_element(By.ID, "engine")).select_by_value("hybrid-rrf")
    rrf = api_search(server.url, query, "hybrid-rrf")
    wait(page, lambda d: "hybrid-rrf" in d.find_element(By.ID, "status").text and shown_ids(d) == [h["id"] for h in rrf["hits"]], "the RRF hits")
    check_explanations(page, rrf)
    assert "reciprocal rank fusion" in page.find_element(By.CSS_SELECTOR, "details.why .note").text

    # side by side: each retriever's top 10, the documents in more than one list marked
    page.find_element(By.ID, "view-side").click()
    columns = page.find_elements(By.CSS_SELECTOR, "#lists .list")
    assert [c.get_attribute("data-retriever") for c in columns] == [entry["name"] for entry in rrf["lists"]]
    counts: dict[str, int] = {}
    for entry in rrf["lists"]:
        for h in entry["hits"]:
            counts[h["id"]] = counts.get(h["id"], 0) + 1
    for column, entry in zip(columns, rrf["lists"]):
        items = column.find_elements(By.CSS_SELECTOR, "li")
        assert [li.get_attribute("data-id") for li in items] == [h["id"] for h in entry["hits"]]
        for li in items:
            assert ("shared" in li.get_attribute("class").split()) == (counts[li.get_attribute("data-id")] > 1)


def test_keyboard_only(server, hybrid_index, page):
    _, queries = hybrid_index
    page.get(server.url + "/")
    wait(page, lambda d: len(Select(d.find_element(By.ID, "engine")).options) > 1, "the engine list")
    body = page.find_element(By.TAG_NAME, "body")
    page.execute_script("document.activeElement.blur()")
    body.send_keys("/")
    assert page.switch_to.active_element.get_attribute("id") == "q"
    page.switch_to.active_element.send_keys(queries[1], Keys.ENTER)
    wait(page, lambda d: len(shown_ids(d)) > 1, "hits")
    page.switch_to.active_element.send_keys(Keys.ESCAPE)
    actions = webdriver.ActionChains(page)
    actions.send_keys("j").send_keys("j").perform()
    current = page.find_elements(By.CSS_SELECTOR, "#hits .hit.current")
    assert len(current) == 1 and current[0].get_attribute("data-rank") == "2"
    actions.send_keys("e").perform()
    assert current[0].find_element(By.CSS_SELECTOR, "details.why").get_attribute("open") is not None
    actions.send_keys("s").perform()
    assert page.find_element(By.ID, "side").is_displayed() and not page.find_element(By.ID, "fused").is_displayed()


def test_phone_width_has_no_sideways_scroll(server, hybrid_index, tmp_path):
    _, queries = hybrid_index
    driver = browser(390, 844)
    try:
        driver.get(server.url + "/#" + httpx.QueryParams({"q": queries[0], "r": "hybrid", "k": 10}).__str__())
        wait(driver, lambda d: len(shown_ids(d)) > 0, "hits from the URL's query")
        driver.find_element(By.CSS_SELECTOR, "#hits details.why summary").click()
        width = driver.execute_script("return document.documentElement.clientWidth")
        assert width <= 400  # the phone's viewport, not a desktop window
        assert driver.execute_script("return document.documentElement.scrollWidth") <= width
        driver.find_element(By.ID, "view-side").click()
        assert driver.execute_script("return document.documentElement.scrollWidth") <= width
        assert driver.save_screenshot(str(tmp_path / "phone.png"))
    finally:
        driver.quit()


def test_page_asks_for_the_token_when_the_server_needs_one(hybrid_index, page):
    from braid.retrieval.serve.auth import AuthConfig

    index, queries = hybrid_index
    live = start(index, auth=AuthConfig(token=TOKEN))
    try:
        assert httpx.get(live.url + "/").status_code == 200  # the page itself holds no data
        assert httpx.get(live.url + "/info").status_code == 401
        page.get(live.url + "/")
        wait(page, lambda d: d.find_element(By.ID, "token-row").is_displayed(), "the token field")
        token = page.find_element(By.ID, "token")
        token.send_keys(TOKEN, Keys.TAB)
        wait(page, lambda d: len(Select(d.find_element(By.ID, "engine")).options) > 1, "the engine list once the token is given")
        search_on_page(page, queries[0])
        api = api_search(live.url, queries[0], "hybrid", headers={"authorization": f"Bearer {TOKEN}"})
        wait(page, lambda d: shown_ids(d) == [h["id"] for h in api["hits"]], "hits with the token")
    finally:
        live.stop()


def test_filter_box_from_metadata(tmp_path, page):
    """An index whose documents carry metadata shows a filter box listing the fields; a filtered search on the
    page shows exactly the API's filtered hits, all of which match; an index without metadata shows no box."""
    from braid.retrieval.build.builder import BuildOptions, build_index
    from tests.conftest import write_jsonl

    docs = [
        {"_id": f"d{i}", "title": f"cats and dogs {i}", "text": "cats purr and dogs bark " * (1 + i % 3), "metadata": {"year": 1990 + i, "lang": "en" if i % 2 else "fr"}}
        for i in range(12)
    ]
    write_jsonl(tmp_path / "data" / "corpus.jsonl", docs)
    build_index(tmp_path / "data", tmp_path / "index", BuildOptions(retrievers=("bm25",), progress=False), log=lambda m: None)
    live = start(tmp_path / "index")
    try:
        page.get(live.url + "/")
        wait(page, lambda d: d.find_element(By.ID, "filter-row").is_displayed(), "the filter box of an index with metadata")
        assert "year (number)" in page.find_element(By.ID, "filter-fields").text and "lang (keyword)" in page.find_element(By.ID, "filter-fields").text
        page.find_element(By.ID, "filter").send_keys("year >= 1995 and lang = en")
        search_on_page(page, "cats")
        r = httpx.post(live.url + "/search", json={"query": "cats", "k": 10, "retriever": "bm25", "fields": True, "explain": True, "filter": "year >= 1995 and lang = en"}, timeout=60)
        r.raise_for_status()
        want = [h["id"] for h in r.json()["hits"]]
        assert want and set(want) == {d["_id"] for d in docs if d["metadata"]["year"] >= 1995 and d["metadata"]["lang"] == "en"}
        wait(page, lambda d: shown_ids(d) == want, "the API's filtered hits")
        assert "f=" in page.current_url  # the filter is part of the shareable URL
    finally:
        live.stop()
