"""End-to-end: the dashboard notebook in a real JupyterLab, in headless Chromium (Debian's, driven by Playwright).

A JupyterLab server starts on 127.0.0.1 (free port, random token, throw-away settings/runtime folders) serving a
copy of nbs/21_reports_dashboard.ipynb; $MSSL_RUNS points the notebook at two synthetic runs and one tiny real `mssl-train` run
made here. The test runs all cells, checks that no cell failed, checks that the information-flow panel shows the real
run's recorded MI and joint entropy, drags the epoch slider and asserts that the spectrum plot's data changed,
then turns on live mode, appends an epoch to a run and waits for the plot to follow it. Screenshots go to the
test's temp dir. Needs /usr/bin/chromium and Playwright for Python: tools/install_browser.sh installs both
(the test runs it when either is missing and is skipped only if that fails).

The test runs under load: for its whole duration it keeps $MSSL_BROWSER_LOAD (default 2) busy-loop processes
running beside the server and the browser, as a training run does when someone watches it live. That is when a
front end that depends on message timing loses updates (issue 11: with plotly's FigureWidget both panels stayed
empty). MSSL_BROWSER_LOAD=0 turns the load off. Every browser console message is kept in console.log next to the
screenshots; the load averages at start and end are printed.
"""
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import ROOT
from procs import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]


def ensure_browser():
    "Chromium and Playwright, installed by tools/install_browser.sh when missing; skip only if that cannot work"
    def ready():
        try: import playwright.sync_api  # noqa: F401
        except ImportError: return False
        return os.access(CHROMIUM, os.X_OK)
    if ready(): return
    r = subprocess.run(["bash", str(ROOT / "tools" / "install_browser.sh"), str(Path(sys.executable).parents[1])],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0 or not ready():
        pytest.skip(f"Chromium/Playwright cannot be installed here (tools/install_browser.sh exit {r.returncode}): "
                    f"{(r.stderr or r.stdout).strip().splitlines()[-1:] or ''}")


def launch(playwright, tmp_path):
    "Debian's Chromium, headless, with a fresh profile in the test's temp dir"
    return playwright.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1280, "height": 1800})




def api(base, token, path, method="GET"):
    req = urllib.request.Request(f"{base}{path}", method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    return json.loads(body) if body else None


class Lab:
    "A JupyterLab server on 127.0.0.1 serving `root`; always shut down (kernels first) on exit"
    def __init__(self, root: Path, work: Path, env: dict):
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        settings = work / "lab-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        self.env = {**os.environ, **env, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                    "JUPYTER_RUNTIME_DIR": str(work / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(work / "lab-settings"),
                    "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"), "IPYTHONDIR": str(work / "ipython")}
        self.cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                    f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
                    f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True", "--LabApp.expose_app_in_browser=True",
                    "--LabApp.news_url=None",
                    "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate"]
        self.log = work / "jupyterlab.log"

    def __enter__(self):
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                api(self.base, self.token, "/api/status"); return self
            except OSError: time.sleep(0.5)
        self.__exit__(None, None, None)
        raise TimeoutError(f"JupyterLab did not answer within 90 s:\n{self.log.read_text()[-3000:]}")

    def __exit__(self, *exc):
        try:
            for k in api(self.base, self.token, "/api/kernels"):
                api(self.base, self.token, f"/api/kernels/{k['id']}", method="DELETE")
        except Exception: pass
        try: api(self.base, self.token, "/api/shutdown", method="POST")
        except Exception: pass
        try: self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@contextmanager
def cpu_load(n: int):
    "n busy-loop processes (each in its own session) for the duration of the block; killed, by their pids, on exit"
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(n)]
    try: yield procs
    finally:
        for p in procs:
            try: os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError: pass
            p.wait(timeout=10)


KERNEL_IDLE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle' && !w.content.widgets.some(c => c.model.type === 'code' && c.promptNode && c.promptNode.textContent.includes('*'));
}"""
PLOT = ".mssl-dashboard .mssl-spectrum .js-plotly-plot"
METRICS_PLOT = ".mssl-dashboard .mssl-metrics .js-plotly-plot"
PLOT_STATE = f"""() => {{
  const el = document.querySelector('{PLOT}');
  if (!el || !el.data) return null;
  return {{title: (el.layout.title && el.layout.title.text) || '', ys: el.data.map(t => Array.from(t.y || []))}};
}}"""
INFO_PLOT = ".mssl-dashboard .mssl-info .js-plotly-plot"
INFO_STATE = f"""() => {{
  const el = document.querySelector('{INFO_PLOT}');
  if (!el || !el.data) return null;
  return {{n: el.data.length, names: el.data.map(t => t.name), ys: el.data.map(t => Array.from(t.y || [])),
          title: (el.layout.title && el.layout.title.text) || '',
          marker: el.layout.shapes && el.layout.shapes.length ? el.layout.shapes[0].x0 : null}};
}}"""
METRICS_STATE = f"""() => {{
  const el = document.querySelector('{METRICS_PLOT}');
  if (!el || !el.data) return null;
  return {{n: el.data.length, shown: el.data.filter(t => t.visible !== false && t.visible !== 'legendonly').length,
          points: el.data.reduce((k, t) => k + (t.y ? t.y.length : 0), 0),
          marker: el.layout.shapes && el.layout.shapes.length ? el.layout.shapes[0].x0 : null}};
}}"""


def plot_at(epoch: int) -> str:
    "a page predicate: the spectrum plot is drawn and titled with `epoch` (null-safe: the plot may be re-rendering)"
    return f"() => {{ const s = ({PLOT_STATE})(); return !!s && s.title.endsWith('epoch {epoch}'); }}"


def test_dashboard_in_jupyterlab(tmp_path):
    ensure_browser()
    from playwright.sync_api import sync_playwright
    from mssl_workbench.reports.spectrum import extend_synthetic_run, make_synthetic_run
    from mssl_workbench.engine.rundir import read_run as load_run

    runs, nbdir = tmp_path / "runs", tmp_path / "notebooks"
    make_synthetic_run(runs / "matrix_ssl", method="matrix_ssl", epochs=5, alpha=1.3)
    make_synthetic_run(runs / "mec", method="mec", epochs=5, alpha=1.8)
    # a real run (tiny: 1 epoch of 300 images), so that the information panel shows what the training monitor recorded
    r = subprocess.run([str(Path(sys.executable).parent / "mssl-train"), "--preset", "fmnist-byol", "--quiet", "--output", str(runs / "real_byol"),
                        "data.root=" + str(ROOT / "data" / "fashion-mnist-sample"), "data.fraction=0.03", "model.proj_hidden=64",
                        "model.pred_hidden=32", "train.epochs=1", "train.batch_size=64", "eval.monitor_samples=128",
                        "eval.knn_train_samples=256"], capture_output=True, text=True, timeout=600,
                       env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-3000:]
    real = load_run(runs / "real_byol")
    assert [e["epoch"] for e in real.epochs] == [0, 1] and real.final_info()["views"] == 2
    real_points = sum(len(real.monitor(m)[0]) for m in ("erank", "rankme", "rankme_cov", "alpha_req"))
    nbdir.mkdir()
    shutil.copy(ROOT / "nbs" / "21_reports_dashboard.ipynb", nbdir / "21_reports_dashboard.ipynb")

    load = int(os.environ.get("MSSL_BROWSER_LOAD", "2"))
    print(f"load: {load} busy-loop processes; load averages at start {os.getloadavg()}")
    with cpu_load(load), Lab(nbdir, tmp_path, {"MSSL_RUNS": str(runs)}) as lab, sync_playwright() as pw:
        ctx = launch(pw, tmp_path)
        page, console, log = ctx.new_page(), [], []
        try:
            def on_console(m):
                log.append(f"[{m.type}] {m.text}")
                if m.type == "error": console.append(m.text)
            page.on("console", on_console)
            page.on("pageerror", lambda e: (log.append(f"[pageerror] {e}"), console.append(f"pageerror: {e}")))
            page.goto(f"{lab.base}/lab/tree/21_reports_dashboard.ipynb?token={lab.token}", timeout=60_000)
            page.wait_for_function(KERNEL_IDLE, timeout=120_000, polling=500)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_selector(PLOT, timeout=120_000)
            page.wait_for_function(KERNEL_IDLE, timeout=120_000, polling=500)

            errors = page.eval_on_selector_all(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                                               "els => els.map(e => e.textContent)")
            tracebacks = [e for e in errors if "Traceback" in e or "Error" in e]
            assert not tracebacks, f"cells failed in the real kernel:\n{tracebacks[0][:3000]}"

            page.locator(".mssl-dashboard").scroll_into_view_if_needed()
            # the kernel is idle; the browser may still be applying the last widget messages
            page.wait_for_function(f"() => {{ const s = ({PLOT_STATE})(); return s && s.title.endsWith('epoch 5') && s.ys.length == 3; }}",
                                   timeout=90_000, polling=250)
            # the second panel too: 3 runs x 4 metrics, drawn with their points, three shown (α-ReQ r² is off)
            page.wait_for_function(f"() => {{ const m = ({METRICS_STATE})(); return !!m && m.n == 12 && m.points > 0; }}",
                                   timeout=90_000, polling=250)
            metrics = page.evaluate(METRICS_STATE)
            assert metrics["n"] == 12 and metrics["points"] == 8 * 6 + real_points and metrics["marker"] == 5, metrics
            # the information-flow panel: 3 runs x (MI, joint entropy, entropy); the real run's lines are its records
            page.wait_for_function(f"() => {{ const i = ({INFO_STATE})(); return !!i && i.n == 9; }}", timeout=90_000, polling=250)
            info = page.evaluate(INFO_STATE)
            lines = dict(zip(info["names"], info["ys"]))
            for key, label in (("mi", "mutual information"), ("joint", "joint entropy"), ("h1", "entropy of view 1")):
                got, want = lines[f"real_byol · {label}"], real.info(key)[1]
                assert len(got) == 2 and all(abs(a - b) < 1e-9 for a, b in zip(got, want)), (key, got, want)
            assert len(lines["matrix_ssl · mutual information"]) == 6 and info["marker"] == 5 and "α = 2" in info["title"], info
            before = page.evaluate(PLOT_STATE)
            assert before["title"].endswith("epoch 5") and len(before["ys"]) == 3 and len(before["ys"][0]) == 128, before["title"]
            truth = load_run(runs / "matrix_ssl")
            assert abs(before["ys"][0][3] - truth.spectrum(5)[3]) < 1e-9 * truth.spectrum(5)[0]
            page.screenshot(path=str(tmp_path / "dashboard-epoch5.png"), full_page=False)

            # drag the slider's handle to the left end of its track: epoch 0
            track = page.locator(".mssl-dashboard .mssl-epoch .noUi-target").bounding_box()
            handle = page.locator(".mssl-dashboard .mssl-epoch .noUi-handle").bounding_box()
            page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
            page.mouse.down()
            page.mouse.move(track["x"] + 1, handle["y"] + handle["height"] / 2, steps=12)
            page.mouse.up()
            page.wait_for_function(plot_at(0), timeout=30_000, polling=200)
            after = page.evaluate(PLOT_STATE)
            page.wait_for_function(f"() => {{ const m = ({METRICS_STATE})(); return !!m && m.marker === 0; }}",  # its marker too
                                   timeout=30_000, polling=200)
            assert after["ys"] != before["ys"]
            assert abs(after["ys"][0][3] - truth.spectrum(0)[3]) < 1e-9 * truth.spectrum(0)[0]
            page.locator(".mssl-dashboard").screenshot(path=str(tmp_path / "dashboard-epoch0.png"))

            # live mode: back to the last epoch, switch live on, the run gains an epoch, the plot follows
            page.locator(".mssl-dashboard .mssl-epoch .noUi-handle").focus()
            page.keyboard.press("End")
            page.wait_for_function(plot_at(5), timeout=30_000, polling=200)
            page.locator(".mssl-dashboard .mssl-live").click()
            extend_synthetic_run(runs / "matrix_ssl")
            page.wait_for_function(plot_at(6), timeout=90_000, polling=250)
            live = page.evaluate(PLOT_STATE)
            new = load_run(runs / "matrix_ssl").spectrum(6)
            assert abs(live["ys"][0][3] - new[3]) < 1e-9 * new[0]
            page.locator(".mssl-dashboard").screenshot(path=str(tmp_path / "dashboard-live-epoch6.png"))
            page.locator(".mssl-dashboard .mssl-live").click()   # live off: stops the refresh thread
            widget_errors = [m for m in console if any(w in m.lower() for w in ("plotly", "anywidget", "widget"))]
            assert not widget_errors, widget_errors
            print("screenshots:", *sorted(tmp_path.glob("*.png")), "console errors:", console, sep="\n")
            print(f"load averages at end {os.getloadavg()}")
        except Exception:
            # leave evidence next to the screenshots: what the page showed and what the dashboard said
            page.screenshot(path=str(tmp_path / "failure.png"))
            state = page.evaluate(PLOT_STATE)
            status = page.eval_on_selector_all(".mssl-dashboard .widget-html-content", "els => els.map(e => e.textContent)")
            widget_log = [m for m in log if any(w in m.lower() for w in ("plotly", "anywidget", "widget", "pageerror"))
                          and "to activate" not in m]
            print(f"failure screenshot: {tmp_path / 'failure.png'}\nplot: {state and state['title']}\n"
                  f"metrics: {page.evaluate(METRICS_STATE)}\ninformation: {page.evaluate(INFO_STATE)}\n"
                  f"dashboard text: {status}\nconsole errors: {console}\n"
                  f"widget console messages: {widget_log[:20]}\nserver log: {lab.log}\nload averages {os.getloadavg()}")
            raise
        finally:
            (tmp_path / "console.log").write_text("\n".join(log))
            ctx.close()
