"""``medtune dashboard`` beyond loopback: ``--allow-remote`` and then an HTTP basic login on every request."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from medtune.cluster.studies.registry import load_view
from medtune.dashboards.app import create_app, login
from tests.helpers_net import listen_port

MEDTUNE = str(Path(sys.executable).with_name("medtune"))


def _outside_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, or None."""
    import psutil

    for addresses in psutil.net_if_addrs().values():
        for a in addresses:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return a.address
    return None


def _store(tmp_path: Path) -> Path:
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").create_experiment("shown-after-login")
    return tmp_path


def test_login_generates_a_private_password_once_or_takes_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDTUNE_DASHBOARD_PASSWORD", raising=False)
    monkeypatch.setenv("MEDTUNE_DASHBOARD_PASSWORD_FILE", str(tmp_path / "pw"))
    user, password, kept = login()
    assert user == "medtune" and kept == str(tmp_path / "pw") and len(password) >= 20
    assert stat.S_IMODE((tmp_path / "pw").stat().st_mode) == 0o600
    assert login()[1] == password  # kept, not regenerated
    monkeypatch.setenv("MEDTUNE_DASHBOARD_PASSWORD", "given-through-the-environment")
    assert login() == ("medtune", "given-through-the-environment", "MEDTUNE_DASHBOARD_PASSWORD")


def test_every_request_needs_the_login_when_credentials_are_given(tmp_path):
    app = create_app(f"sqlite:///{tmp_path / 'mlflow.db'}", load_view, credentials=("medtune", "right-password-123"))
    client = app.server.test_client()
    for path in ("/", "/_dash-layout", "/_dash-dependencies"):
        refused = client.get(path)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
        assert client.get(path, auth=("medtune", "wrong")).status_code == 401
        assert client.get(path, auth=("medtune", "right-password-123")).status_code == 200


def test_dashboard_beyond_loopback_without_allow_remote_exits_2(tmp_path):
    proc = subprocess.run([MEDTUNE, "dashboard", "--output", str(_store(tmp_path)), "--host", "0.0.0.0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "medtune: error: --host 0.0.0.0 would serve the dashboard beyond this machine; add --allow-remote "
        "(it then asks for a login)"]


def test_dashboard_with_allow_remote_asks_for_the_generated_login(tmp_path):
    host = _outside_address()
    if host is None:
        pytest.skip("this machine has no address beyond loopback")
    port = listen_port(host)
    pw_file = tmp_path / "dashboard-password"
    env = {k: v for k, v in os.environ.items() if k != "MEDTUNE_DASHBOARD_PASSWORD"}
    env["MEDTUNE_DASHBOARD_PASSWORD_FILE"] = str(pw_file)
    dash = subprocess.Popen([MEDTUNE, "dashboard", "--output", str(_store(tmp_path)), "--host", host,
                             "--allow-remote", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://{host}:{port}/"
    try:
        deadline, answer = time.time() + 120, None
        while time.time() < deadline and dash.poll() is None and answer is None:
            try:
                answer = requests.get(url, timeout=5)
            except requests.RequestException:
                time.sleep(0.3)
        assert answer is not None and answer.status_code == 401, dash.poll()
        password = pw_file.read_text().strip()
        assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
        assert requests.get(url, timeout=30, auth=("medtune", "not-it")).status_code == 401
        assert requests.get(url, timeout=30, auth=("medtune", password)).status_code == 200
        layout = requests.get(url + "_dash-layout", timeout=30, auth=("medtune", password))
        assert layout.status_code == 200
        with pytest.raises(requests.RequestException):  # bound to that address only, not to loopback
            requests.get(f"http://127.0.0.1:{port}/", timeout=5)
    finally:
        dash.terminate()
        out, err = dash.communicate(timeout=30)
    assert str(pw_file) in err and "WARNING" in err
    assert password not in out + err
