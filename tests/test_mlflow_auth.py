"""The secrets of ``medtune cluster up`` and the helpers around them, without starting anything."""

from __future__ import annotations

import os
import stat

import pytest

from medtune.cluster.ops import mlflow_auth, service
from medtune.errors import InputError


def test_passwords_are_generated_once_private_and_distinct(tmp_path):
    config = mlflow_auth.ensure_files(tmp_path)
    credentials = tmp_path / mlflow_auth.CREDENTIALS
    for path in (config, credentials):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    admin = mlflow_auth.admin_credentials(config)
    trials = mlflow_auth.read_credentials(credentials)
    assert admin["MLFLOW_TRACKING_USERNAME"] == "medtune-admin"
    assert trials["MLFLOW_TRACKING_USERNAME"] == "medtune-trials"
    assert admin["MLFLOW_TRACKING_PASSWORD"] != trials["MLFLOW_TRACKING_PASSWORD"]
    assert all(len(c["MLFLOW_TRACKING_PASSWORD"]) >= 24 for c in (admin, trials))
    assert "default_permission = NO_PERMISSIONS" in config.read_text()
    before = config.read_text(), credentials.read_text()
    mlflow_auth.ensure_files(tmp_path)
    assert (config.read_text(), credentials.read_text()) == before  # kept, not regenerated


def test_a_lost_admin_config_beside_a_user_store_exits_2(tmp_path):
    (tmp_path / mlflow_auth.AUTH_DB).write_bytes(b"")
    with pytest.raises(InputError, match="mlflow-auth.ini is missing .* delete .*mlflow-auth.db too"):
        mlflow_auth.ensure_files(tmp_path)


def test_damaged_credentials_are_one_line(tmp_path):
    (tmp_path / "creds").write_text("MLFLOW_TRACKING_USERNAME=x\n")
    with pytest.raises(InputError, match="is damaged; delete it"):
        mlflow_auth.read_credentials(tmp_path / "creds")


def test_server_environment_names_the_config_and_carries_no_inherited_login(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "inherited")
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "would-win-over-the-file")
    env = mlflow_auth.server_env(tmp_path / "mlflow-auth.ini")
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == str(tmp_path / "mlflow-auth.ini")
    assert len(env["MLFLOW_FLASK_SERVER_SECRET_KEY"]) == 64
    assert "MLFLOW_TRACKING_PASSWORD" not in env and "MLFLOW_AUTH_ADMIN_PASSWORD" not in env


def test_the_recorded_cluster_login_is_used_only_for_its_own_server(tmp_path, monkeypatch):
    mlflow_auth.ensure_files(tmp_path)
    service.write_state(tmp_path, {"mlflow": "http://127.0.0.1:5000", "mlflow_credentials":
                                   str(tmp_path / mlflow_auth.CREDENTIALS)})
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert not service.apply_mlflow_credentials("http://10.0.0.5:5000", tmp_path)  # another server
    assert not service.apply_mlflow_credentials("sqlite:///x.db", tmp_path)
    assert service.apply_mlflow_credentials("http://127.0.0.1:5000/", tmp_path)
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "medtune-trials"
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "someone-else")  # the user's own login wins
    assert not service.apply_mlflow_credentials("http://127.0.0.1:5000", tmp_path)
    hint = service.mlflow_login_hint("http://127.0.0.1:5000", tmp_path)
    assert hint is None  # the state records no admin config


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("localhost", True), ("::1", True), ("[::1]", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("192.0.2.2", False), ("::", False), ("example.org", False),
])
def test_is_loopback(host, loopback):
    assert service.is_loopback(host) is loopback


def test_auth_env_of_a_loopback_cluster_carries_the_loopback_switch(tmp_path):
    state = {"auth": True, "token_path": str(tmp_path / "token"), "loopback": True}
    assert service.auth_env(state) == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(tmp_path / "token"),
                                       "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    assert service.auth_env({**state, "auth": False, "loopback": False}) == {"RAY_AUTH_MODE": "disabled"}


class _AuthServer:
    """MLflow's user store as its REST API answers (users, one grant per user and resource; a second create of
    either is RESOURCE_ALREADY_EXISTS), behind AuthServiceClient's methods."""

    def __init__(self):
        self.users: dict[str, str] = {}
        self.grants: dict[tuple[str, str, str], str] = {}

    def client(self, url):
        from mlflow.exceptions import RestException

        server = self

        def exists(what):
            return RestException({"error_code": "RESOURCE_ALREADY_EXISTS", "message": f"{what} already exists."})

        class Client:
            def create_user(self, user, password):
                if user in server.users:
                    raise exists(f"User {user}")
                server.users[user] = password

            def update_user_password(self, user, password):
                server.users[user] = password

            def grant_user_permission(self, user, kind, resource, permission):
                if (user, kind, resource) in server.grants:
                    raise exists(f"Permission for user={user} on resource_type={kind}, resource_id={resource}")
                server.grants[user, kind, resource] = permission

            def get_user_permission(self, user, kind, resource):
                from mlflow.server.auth.entities import GetUserPermissionResult

                return GetUserPermissionResult(True, server.grants[user, kind, resource])

            def revoke_user_permission(self, user, kind, resource):
                del server.grants[user, kind, resource]

        return Client()


def test_setting_up_the_trials_user_again_keeps_its_grant(tmp_path, monkeypatch):
    """A second `cluster up` on the same user store (the user and its grant exist) succeeds; a grant changed by
    hand is set back to EDIT. (A real MLflow server cycles through it in tests/test_service.py.)"""
    import mlflow.server.auth.client

    server = _AuthServer()
    monkeypatch.setattr(mlflow.server.auth.client, "AuthServiceClient", server.client)
    config = mlflow_auth.ensure_files(tmp_path)
    credentials = tmp_path / mlflow_auth.CREDENTIALS
    password = mlflow_auth.read_credentials(credentials)["MLFLOW_TRACKING_PASSWORD"]
    for _ in range(3):
        mlflow_auth.setup_trials_user("http://127.0.0.1:5000", config, credentials)
        assert server.users == {"medtune-trials": password}
        assert server.grants == {("medtune-trials", "experiment", "*"): "EDIT"}
    server.grants["medtune-trials", "experiment", "*"] = "READ"
    mlflow_auth.setup_trials_user("http://127.0.0.1:5000", config, credentials)
    assert server.grants == {("medtune-trials", "experiment", "*"): "EDIT"}
