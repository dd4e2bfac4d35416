"""MLflow's own authentication for the tracking server of ``medtune cluster up``.

The server runs MLflow's basic-auth app (``mlflow server --app-name basic-auth``, installed with the
``mlflow[auth]`` extra): every REST call and UI page needs HTTP basic credentials, except ``/health`` and the
UI's static files. Two users exist:

* ``medtune-admin``, MLflow's admin user, created by MLflow itself at the first start from the generated
  password in its config file. A person logs in to the UI with it; medtune uses it only to set up the
  trials user.
* ``medtune-trials``, an ordinary user with EDIT on every experiment (a grant on ``experiment`` ``*``) and
  MANAGE on the experiments it creates. Drivers and trials log as this user: they read it from
  ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` in the environment medtune gives them.

Users with no grant get nothing (``default_permission = NO_PERMISSIONS``). Files in the state folder, each
mode 0600 (the folder itself is 0700):

* ``mlflow-auth.ini``: MLflow's auth config (``MLFLOW_AUTH_CONFIG_PATH``) with the admin's password;
* ``mlflow-auth.db``: MLflow's user store (password hashes and grants);
* ``mlflow-credentials``: the trials user's two ``KEY=VALUE`` lines, which a shell can source.

A password is never put on a command line, in MLflow params, tags or artifacts, or in a log line. The
server's Flask secret key (MLflow's CSRF protection of its sign-up form) is generated at every start and
given to the server in its environment only.
"""

from __future__ import annotations

import configparser
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medtune.errors import InputError
from medtune.util import secret_file

__all__ = [
    "ADMIN_USER", "AUTH_CONFIG", "AUTH_DB", "CREDENTIALS", "GRANT", "PASSWORD_ENV", "TRIALS_USER", "USER_ENV",
    "admin_credentials", "ensure_files", "read_credentials", "server_env", "setup_trials_user",
]

logger = logging.getLogger(__name__)

ADMIN_USER = "medtune-admin"
TRIALS_USER = "medtune-trials"
AUTH_CONFIG = "mlflow-auth.ini"
AUTH_DB = "mlflow-auth.db"
CREDENTIALS = "mlflow-credentials"
USER_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
GRANT = "EDIT"  # the trials user's permission on every experiment

_CONFIG = """\
# MLflow basic-auth config written by `medtune cluster up` (keep it mode 0600: it holds the admin password).
# MLflow reads admin_password only when it creates the admin user, at the first start of an empty user store.
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = sqlite:///{db}
admin_username = {admin}
admin_password = {password}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
"""


def _password() -> str:
    return secrets.token_urlsafe(24)


def ensure_files(state_dir: Path) -> Path:
    """Generate the admin and trials passwords once (mode 0600); returns the MLflow auth config's path.

    Raises:
        InputError: the user store exists but the config holding its admin password is gone.
    """
    state_dir = Path(state_dir)
    config, db = state_dir / AUTH_CONFIG, state_dir / AUTH_DB
    if db.exists() and not config.exists():
        raise InputError(
            f"{config} is missing but MLflow's user store {db} is still there, so the admin password is lost; "
            f"delete {db} too (MLflow then starts a new user store with new passwords; runs are kept)"
        )
    secret_file(config, lambda: _CONFIG.format(db=db, admin=ADMIN_USER, password=_password()))
    secret_file(state_dir / CREDENTIALS, lambda: f"{USER_ENV}={TRIALS_USER}\n{PASSWORD_ENV}={_password()}\n")
    if db.exists():
        os.chmod(db, 0o600)
    return config


def read_credentials(path: str | os.PathLike) -> dict[str, str]:
    """The ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` pair kept in ``path``."""
    pairs = {}
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InputError(f"cannot read the MLflow credentials {str(path)!r} ({exc.strerror}); "
                         "run `medtune cluster up` again to write them") from None
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key in (USER_ENV, PASSWORD_ENV):
            pairs[key] = value
    if set(pairs) != {USER_ENV, PASSWORD_ENV}:
        raise InputError(f"the MLflow credentials file {str(path)!r} is damaged; delete it and run "
                         "`medtune cluster up` again (a new trials password is set)")
    return pairs


def admin_credentials(config: str | os.PathLike) -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(os.fspath(config))
    return {USER_ENV: parser["mlflow"]["admin_username"], PASSWORD_ENV: parser["mlflow"]["admin_password"]}


def server_env(config: Path) -> dict[str, str]:
    """The MLflow server's environment: ``os.environ`` plus the auth config, never a password of its own.

    MLflow prefers ``MLFLOW_AUTH_ADMIN_*`` over the config file, so inherited values are dropped.
    """
    env = {k: v for k, v in os.environ.items()
           if k not in (USER_ENV, PASSWORD_ENV, "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD")}
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
    env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(32)
    return env


@contextmanager
def _login(credentials: dict[str, str]) -> Iterator[None]:
    """This process's MLflow clients log in with ``credentials`` inside the block."""
    saved = {k: os.environ.get(k) for k in credentials}
    os.environ.update(credentials)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def setup_trials_user(url: str, config: Path, credentials: Path) -> None:
    """As MLflow's admin: create the trials user (or set its password to the one in ``credentials``, which is how a
    deleted credentials file becomes a new password) and grant it EDIT on every experiment.

    Idempotent: every ``cluster up`` on a state folder whose user store already holds the user and its grant
    (an earlier ``up``) leaves them as they are; a grant changed by hand is set back to EDIT.
    """
    import warnings

    from mlflow.exceptions import RestException

    with warnings.catch_warnings():  # importing MLflow's server app warns about Starlette's deprecations
        warnings.simplefilter("ignore")
        from mlflow.server.auth.client import AuthServiceClient

    trials = read_credentials(credentials)
    user, password = trials[USER_ENV], trials[PASSWORD_ENV]
    client = AuthServiceClient(url)
    with _login(admin_credentials(config)):
        try:
            client.create_user(user, password)
            logger.info("created the MLflow user %s", user)
        except RestException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            client.update_user_password(user, password)
        try:
            client.grant_user_permission(user, "experiment", "*", GRANT)
        except RestException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            if client.get_user_permission(user, "experiment", "*").permission != GRANT:
                client.revoke_user_permission(user, "experiment", "*")
                client.grant_user_permission(user, "experiment", "*", GRANT)
