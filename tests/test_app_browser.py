"""The comparison dashboard and the HTML report in a real headless Chromium.

``medtune dashboard`` serves the MLflow store that holds one smoke run of each study (tests/conftest.py); the
browser opens each study's view and checks its title, that its table names every method MLflow holds for that
study, and that its plots and pictures are drawn (in the DOM, and a screenshot that is not blank). Screenshots
are saved under the output folder, in ``screenshots/``. A second, small store is written while the page is open
to show that the page follows a run as it goes. The HTML report is opened from a file with every request
recorded: none may go to any host but localhost.

Chromium is Debian's (``make test`` installs it as root); Playwright drives it through its executable path, no
browser download. Without Chromium these tests are skipped, unless ``MEDTUNE_REQUIRE_BROWSER=1`` (CI) makes that
a failure.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

from medtune.dashboards import al_report, apga_report, paser_report
from medtune.dashboards import lr_report as report
from tests.helpers_net import listen_port
from tests.test_lr_study import MEDTUNE, _client, medtune

# The first test here may wait for the four shared smoke runs (tests/conftest.py): more than the default 900 s on
# a busy machine.
pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.timeout(1800)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]

STUDY_TITLES = {"lr": report.TITLE, "active-learning": al_report.TITLE, "paser": paser_report.TITLE,
                "apga": apga_report.TITLE}

# experiment -> (study, the plots its view must draw, whether it has pictures)
VIEWS = {
    "lr-schedulers": ("lr", ["dice-curves", "lr-traces", "qtable-qlearning", "qtable-qlearning_warm"], False),
    "active-learning": ("active-learning", ["f1-curves"], False),
    "paser": ("paser", ["pareto"], True),
    "apga": ("apga", ["accuracy-curves"], True),
}


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("MEDTUNE_REQUIRE_BROWSER"):
            pytest.fail(f"no Chromium at {CHROMIUM}; install Debian's chromium package (make test does, as root)")
        pytest.skip("no Chromium: install Debian's chromium package to run the browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield b
        b.close()


def _serve(output: Path, refresh: float = 2.0):
    """Start ``medtune dashboard`` on a free port; return (process, base URL) once it answers."""
    port = listen_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    proc = subprocess.Popen([MEDTUNE, "dashboard", "--output", str(output), "--port", str(port), "--refresh",
                             str(refresh)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"medtune dashboard exited {proc.returncode}: {proc.stdout.read()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError("medtune dashboard did not answer within 90 s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def dashboard(all_studies):
    proc, url = _serve(all_studies)
    yield url
    _stop(proc)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(90_000)  # a view is built from MLflow on the first visit: seconds on a busy machine
    yield pg
    context.close()


def _not_blank(png: bytes, min_colours: int = 20) -> tuple[int, float]:
    """(distinct colours, share of non-white pixels) of a screenshot; a blank page has 1 colour and 0 share."""
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    colours = len(im.getcolors(maxcolors=1 << 24) or [])
    grey = im.convert("L")
    ink = sum(n for value, n in enumerate(grey.histogram()) if value < 245) / (im.width * im.height)
    assert colours >= min_colours and ink > 0.01, f"screenshot looks blank: {colours} colours, {ink:.1%} non-white"
    return colours, ink


def _methods_in_mlflow(output: Path, experiment: str) -> set[str]:
    client = _client(output)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'trial'")
    return {r.data.params["method"] for r in runs}


def _first_cells(page) -> set[str]:
    """The first cell of every row of the view's tables: the method names (PaSeR's carry `` lam=...``)."""
    return {c.inner_text().split(" lam=")[0] for c in page.query_selector_all("table.comparison td:first-child")}


def _foreign(requests: list[str]) -> list[str]:
    """The requests that went anywhere but this machine."""
    return [u for u in requests if urlparse(u).scheme not in ("file", "data", "blob")
            and urlparse(u).hostname not in ("localhost", "127.0.0.1")]


def _plot_traces(page, plot_id: str) -> int:
    """How many traces with data the Plotly graph ``plot-<id>`` drew (its data, and SVG it rendered)."""
    return page.evaluate(
        """id => {
            const gd = document.querySelector('#plot-' + id + ' .js-plotly-plot')
                || document.getElementById('plot-' + id);
            if (!gd || !gd._fullData) return -1;
            const drawn = gd.querySelectorAll('.scatterlayer .trace path, .heatmaplayer image, .hm image').length;
            const withData = gd._fullData.filter(t => (t.x && t.x.length) || (t.z && t.z.length)).length;
            return drawn > 0 ? withData : 0;
        }""", plot_id)


def _wait_for_view(page, title: str, experiment: str) -> None:
    """Wait until the page shows ``experiment``'s view (its title and its status line), not just any view."""
    page.wait_for_function("""([title, experiment]) => {
        const t = document.getElementById('view-title'), s = document.getElementById('view-status');
        return t && s && t.innerText === title && s.innerText.includes('experiment ' + experiment + ',');
    }""", arg=[title, experiment])


@pytest.mark.parametrize("experiment", list(VIEWS))
def test_each_study_view_shows_its_title_table_methods_and_drawn_plots(experiment, dashboard, page, all_studies):
    study, plots, pictures = VIEWS[experiment]
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{dashboard}?experiment={experiment}")
    _wait_for_view(page, STUDY_TITLES[study], experiment)
    assert page.inner_text("#view-title") == STUDY_TITLES[study]
    assert experiment in page.inner_text("#view-status")

    methods = _methods_in_mlflow(all_studies, experiment)
    assert methods and methods == _first_cells(page)

    for plot_id in plots:
        page.wait_for_selector(f"#plot-{plot_id} .main-svg")
        assert _plot_traces(page, plot_id) > 0, f"{plot_id} drew nothing"
        _not_blank(page.locator(f"#plot-{plot_id}").screenshot())
    if pictures:
        images = page.query_selector_all("section img")
        assert images and all(page.evaluate("i => i.complete && i.naturalWidth > 0", i) for i in images)

    shots = all_studies / "screenshots"
    shots.mkdir(exist_ok=True)
    png = page.screenshot(path=str(shots / f"dashboard-{experiment}.png"), full_page=True)
    _not_blank(png)
    assert requests and not _foreign(requests)  # Dash serves its own JavaScript


def test_the_experiment_list_offers_every_study_and_switches_the_view(dashboard, page):
    page.goto(dashboard)
    page.wait_for_selector("#view-title")  # the most recently active experiment, unasked
    first = page.inner_text("#view-title")
    assert first in STUDY_TITLES.values()
    page.click("#experiment")
    options = [o.inner_text() for o in page.query_selector_all("[role=option]")]
    for experiment in VIEWS:
        assert any(o.startswith(f"{experiment} (") for o in options), options
    other = next(e for e in VIEWS if STUDY_TITLES[VIEWS[e][0]] != first)
    page.click(f"[role=option]:has-text('{other} (')")
    page.wait_for_function("t => document.getElementById('view-title').innerText !== t", arg=first)
    assert page.inner_text("#view-title") == STUDY_TITLES[VIEWS[other][0]]


def test_an_unknown_or_empty_experiment_shows_one_clear_message(dashboard, page, all_studies):
    page.goto(f"{dashboard}?experiment=lr-schedulerz")
    page.wait_for_selector("#message")
    text = page.inner_text("#message")
    assert "'lr-schedulerz' is not in the MLflow store" in text and "lr-schedulers" in text
    assert not page.query_selector("#view-title")

    _client(all_studies).create_experiment("nothing-yet")
    page.goto(f"{dashboard}?experiment=nothing-yet")
    page.wait_for_selector("#message")
    assert "'nothing-yet' has no trial runs" in page.inner_text("#message")


def _log_round(client, run_id: str, step: int, f1: float) -> None:
    for key, value in (("labeled", 50.0 * step), ("labeled_fraction", 0.25 * step), ("macro_f1", f1),
                       ("micro_f1", f1)):
        client.log_metric(run_id, key, value, step=step)


def test_the_page_follows_a_run_as_it_logs(browser, tmp_path):
    """A store written while the page is open: a new round and a new trial appear without reloading."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("growing", artifact_location=(tmp_path / "artifacts").as_uri())
    tags = {"medtune.session": "growing-20260101-000000", "medtune.kind": "trial"}

    def trial(method: str) -> str:
        run = client.create_run(exp, run_name=f"{method}-seed0", tags=tags)
        for k, v in (("study", "active-learning"), ("method", method), ("seed", "0")):
            client.log_param(run.info.run_id, k, v)
        return run.info.run_id

    first = trial("random")
    _log_round(client, first, 1, 0.50)
    proc, url = _serve(tmp_path, refresh=1.0)
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(f"{url}?experiment=growing")
        page.wait_for_function("() => (document.getElementById('view-status') || {}).innerText"
                               "?.endsWith('1 run: 1 running')")
        assert "1 run: 1 running" in page.inner_text("#view-status")
        assert "lc" not in [c.inner_text() for c in page.query_selector_all("#table-macro-f1 td:first-child")]

        _log_round(client, first, 2, 0.60)
        second = trial("lc")
        _log_round(client, second, 1, 0.55)
        client.set_terminated(first)
        page.wait_for_function("""() => {
            const cells = [...document.querySelectorAll('#table-macro-f1 td:first-child')].map(c => c.innerText);
            return document.getElementById('view-status').innerText.endsWith('2 runs: 1 finished, 1 running')
                && cells.includes('lc');
        }""")
        names = [c.inner_text() for c in page.query_selector_all("#table-macro-f1 td:first-child")]
        assert sorted(names) == ["lc", "random"]
    finally:
        context.close()
        _stop(proc)


def test_html_report_opens_offline_with_every_view_drawn(browser, all_studies, tmp_path):
    """``medtune report --html``: one file per study; opened from disk it requests nothing from any other host."""
    from concurrent.futures import ThreadPoolExecutor

    def write(experiment: str):
        path = tmp_path / f"{experiment}.html"
        return path, medtune("report", experiment, "--output", str(all_studies), "--html", str(path))

    with ThreadPoolExecutor(len(VIEWS)) as pool:  # the four reports at once: each process pays the imports
        written = dict(zip(VIEWS, pool.map(write, VIEWS)))
    for experiment, (study, plots, _pictures) in VIEWS.items():
        path, proc = written[experiment]
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"wrote the HTML report to {path}" in proc.stdout

        context = browser.new_context(viewport={"width": 1300, "height": 900})
        requests: list[str] = []
        context.on("request", lambda r, seen=requests: seen.append(r.url))
        page = context.new_page()
        page.goto(path.as_uri())
        page.wait_for_selector("#view-title")
        assert page.inner_text("#view-title") == STUDY_TITLES[study]
        for plot_id in plots:
            page.wait_for_selector(f"#plot-{plot_id} .main-svg")
            assert _plot_traces(page, plot_id) > 0
        assert _first_cells(page) == _methods_in_mlflow(all_studies, experiment)
        _not_blank(page.screenshot(full_page=True))
        page.wait_for_timeout(500)  # anything the page would fetch late
        context.close()

        assert requests and not _foreign(requests), _foreign(requests)


def test_html_report_of_an_unknown_or_empty_experiment_exits_2(all_studies, tmp_path):
    out = tmp_path / "r.html"
    proc = medtune("report", "pasr", "--output", str(all_studies), "--html", str(out))
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.count("\n") == 1 and "'pasr' is not in the MLflow store" in proc.stderr
    assert "did you mean 'paser'" in proc.stderr

    _client(all_studies).create_experiment("empty-for-report")
    proc = medtune("report", "empty-for-report", "--output", str(all_studies), "--html", str(out))
    assert proc.returncode == 2 and not out.exists()
    assert "'empty-for-report' has no trial runs" in proc.stderr


def test_summary_runs_hold_the_html_report(all_studies):
    from plotly.offline import get_plotlyjs

    client = _client(all_studies)
    for experiment in VIEWS:
        exp = client.get_experiment_by_name(experiment)
        (summary,) = client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'summary'")
        folder = all_studies / "downloaded" / experiment
        folder.mkdir(parents=True, exist_ok=True)
        path = Path(client.download_artifacts(summary.info.run_id, "report.html", str(folder)))
        text = path.read_text()
        assert f'<h1 id="view-title">{STUDY_TITLES[VIEWS[experiment][0]]}</h1>' in text
        assert get_plotlyjs() in text  # inline: the page needs no network (the browser test above checks)


def _growing_store(root: Path) -> str:
    """A store with two active-learning experiments: ``older`` and, active later, ``newer`` (the default)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    for name in ("older", "newer"):
        exp = client.create_experiment(name, artifact_location=(root / "artifacts" / name).as_uri())
        run = client.create_run(exp, run_name="random-seed0",
                                tags={"medtune.session": f"{name}-20260101-000000", "medtune.kind": "trial"})
        for k, v in (("study", "active-learning"), ("method", "random"), ("seed", "0")):
            client.log_param(run.info.run_id, k, v)
        _log_round(client, run.info.run_id, 1, 0.5)
        client.set_terminated(run.info.run_id)
        time.sleep(0.05)  # "newer" ends strictly later
    return uri


@pytest.mark.parametrize("delays", [pytest.param((3.0,), id="slow-first-listing-answers-after-ticks"),
                                    pytest.param((1.0,) * 8, id="every-listing-slow-ticks-pile-up")])
def test_a_shared_link_opens_its_experiment_however_the_callbacks_interleave(browser, tmp_path, monkeypatch, delays):
    """``?experiment=older`` must show ``older`` although ``newer`` is the default, with ticks (0.5 s) firing while
    the experiment list is slow to read, so that the URL's call and the ticks' calls answer in any order."""
    import threading

    from werkzeug.serving import make_server

    import medtune.dashboards.app as app
    from medtune.cluster.studies.registry import load_view

    uri = _growing_store(tmp_path)
    real, calls = app.experiments, []

    def slow(tracking_uri):
        calls.append(time.monotonic())
        if len(calls) <= len(delays):
            time.sleep(delays[len(calls) - 1])
        return real(tracking_uri)

    monkeypatch.setattr(app, "experiments", slow)
    assert [e.name for e in real(uri)][0] == "newer"
    server = make_server("127.0.0.1", listen_port(), app.create_app(uri, load_view, refresh_s=0.5).server,
                         threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(f"http://127.0.0.1:{server.server_port}/?experiment=older")
        _wait_for_view(page, STUDY_TITLES["active-learning"], "older")
        seen = len(calls)
        deadline = time.monotonic() + 60
        while len(calls) < seen + 4 and time.monotonic() < deadline:  # four more listings: ticks after the view
            page.wait_for_timeout(250)
        assert len(calls) >= seen + 4, "the page stopped refreshing"
        assert "experiment older," in page.inner_text("#view-status")
        assert "older (" in page.inner_text("#experiment")
    finally:
        context.close()
        server.shutdown()


def test_choose_experiment_keeps_the_address_over_ticks_and_the_users_choice_over_the_address():
    from medtune.dashboards.app import choose_experiment

    names = ["newer", "older"]
    assert choose_experiment("older", None, "tick", names) == "older"  # a tick before the URL's call answered
    assert choose_experiment("older", None, None, names) == "older"
    assert choose_experiment("older", "newer", "url", names) == "older"  # the address changed
    assert choose_experiment("older", "newer", "tick", names) == "newer"  # the user picked newer afterwards
    assert choose_experiment(None, None, "tick", names) == "newer"
    assert choose_experiment(None, None, None, []) is None
    assert choose_experiment("gone", None, "tick", names) == "gone"  # shown with its message, not replaced
