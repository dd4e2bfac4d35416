"""The ``medtune`` command.

    medtune run SPEC [--smoke] [--set key=value ...] [--output DIR] [--storage ROOT] [--address RAY]
                     [--tracking-uri URI]
    medtune tune SPEC [--smoke] [--set key=value ...] [--output DIR] [--storage ROOT] [--address RAY]
                      [--tracking-uri URI]
    medtune suite [SPEC] [--smoke] [--set key=value ...] [--resume [DIR]] [--output DIR] [--address RAY]
                         [--tracking-uri URI]
    medtune resume DIR [--address RAY] | resume [SESSION] --storage ROOT [--address RAY]
    medtune report EXPERIMENT [--output DIR | --tracking-uri URI] [--session NAME] [--save FOLDER]
    medtune report EXPERIMENT --html FILE
    medtune report --sync SESSION_DIR
    medtune dashboard [--output DIR | --tracking-uri URI] [--port N] [--refresh S] [--host H --allow-remote]
    medtune ui [--output DIR | --tracking-uri URI] [--port N]
    medtune specs
    medtune cluster up [--host H --allow-remote] [--port P] [--dashboard-port D] [--mlflow-port M] [--no-auth]
    medtune cluster down | status | join ADDRESS [--token-file F]
    medtune submit SPEC [--smoke] [--set key=value ...] [--storage ROOT] [--address URL] [--wait]
    medtune jobs list | logs JOB [--follow] | stop JOB

Bad input (a spec, a data folder, a tracking store) ends with one line on
stderr naming the problem, the value and the fix, and exit status 2, before
any trial starts.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from medtune import __version__
from medtune.errors import InputError, TrialsFailedError  # light; every other module is imported by its command

__all__ = [
    "COMMANDS", "DEFAULT_OUTPUT", "STORAGE_HELP", "UI_TIMEOUT_S", "cmd_cluster", "cmd_dashboard", "cmd_jobs",
    "cmd_report", "cmd_resume", "cmd_run", "cmd_specs", "cmd_submit", "cmd_suite", "cmd_tune", "cmd_ui", "main",
]

DEFAULT_OUTPUT = "./medtune-runs"
STORAGE_HELP = ("where the session state lives (Tune's checkpoints, journals, logs): a folder, or file:// URI, "
                "that every node reaches at the same path (default: the spec's storage, else --output)")


def _with(common: argparse.ArgumentParser) -> type:
    """An ArgumentParser class whose instances (the sub-commands) also take ``common``'s options."""

    class Parser(argparse.ArgumentParser):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("parents", [])
            kwargs["parents"] = [*kwargs["parents"], common]
            super().__init__(*args, **kwargs)

    return Parser


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="medtune",
        description="Reinforcement-learning training control for medical imaging on Ray Tune, tracked in MLflow.",
    )
    p.add_argument("--version", action="version", version=f"medtune {__version__}")
    # --verbose works before or after the command: `medtune --verbose run ...` and `medtune run ... --verbose`
    p.add_argument("--verbose", action="store_true", help="also show Ray's, Tune's and MLflow's own output")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="also show Ray's, Tune's and MLflow's own output and the trials' own prints")
    sub: argparse._SubParsersAction[argparse.ArgumentParser] = p.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_with(common))

    run = sub.add_parser("run", help="run a study spec (a YAML path or a built-in name such as lr-schedulers)")
    run.add_argument("spec", help="YAML path or built-in spec name (see `medtune specs`)")
    run.add_argument("--smoke", action="store_true", help="shrink every budget: finishes in about a minute on 2 CPUs")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a spec value, e.g. --set train.epochs=10 --set seeds=[0,1]")
    run.add_argument("--output", default=DEFAULT_OUTPUT,
                     help=f"folder for sessions and the default MLflow store ({DEFAULT_OUTPUT})")
    run.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    run.add_argument("--tracking-uri", default=None,
                     help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else SQLite under --output)")
    run.add_argument("--storage", default=None, metavar="ROOT", help=STORAGE_HELP)

    tune_p = sub.add_parser("tune", help="the equal-budget protocol: search every method's own hyperparameters on "
                                         "the validation split, then retrain the best with fresh seeds")
    for action in run._actions:  # the same arguments as `run`
        if action.dest in ("help", "verbose"):
            continue
        tune_p._add_action(action)

    suite = sub.add_parser("suite", help="one LR comparison over several tasks, judged with performance profiles "
                                         "(a suite spec: a YAML path or a built-in name such as lr-suite)")
    suite.add_argument("spec", nargs="?", default=None,
                       help="suite YAML path or built-in name (with --resume DIR: default, the spec the suite ran)")
    suite.add_argument("--smoke", action="store_true", help="apply the suite's smoke: section (tiny budgets)")
    suite.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a suite value, e.g. --set epochs=10 --set tasks.phantom-24.set.data.seed=3")
    suite.add_argument("--resume", nargs="?", const=True, default=None, metavar="DIR",
                       help="continue a suite folder (default: the latest of this suite under --output): finished "
                            "tasks are kept, the others run")
    suite.add_argument("--output", default=DEFAULT_OUTPUT,
                       help=f"folder for sessions and the default MLflow store ({DEFAULT_OUTPUT})")
    suite.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    suite.add_argument("--tracking-uri", default=None,
                       help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else SQLite under --output)")

    resume = sub.add_parser("resume", help="continue an interrupted session with the Q-table it had")
    resume.add_argument("dir", nargs="?", default=None,
                        help="the session folder printed by `medtune run`; with --storage, a session name stored "
                             "there (default: its latest session)")
    resume.add_argument("--storage", default=None, metavar="ROOT",
                        help="find the session in this storage root alone (the one the run used)")
    resume.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")

    report = sub.add_parser("report", help="rebuild an experiment's comparison from MLflow alone")
    report.add_argument("experiment", nargs="?", help="MLflow experiment name (the spec's name, e.g. lr-schedulers)")
    report.add_argument("--sync", default=None, metavar="SESSION_DIR",
                        help="first deliver the MLflow records a session buffered while its server was unreachable")
    report.add_argument("--session", default=None, help="a particular session (default: the latest)")
    report.add_argument("--output", default=DEFAULT_OUTPUT, help="where the default MLflow store lives")
    report.add_argument("--tracking-uri", default=None, help="MLflow tracking URI")
    report.add_argument("--save", default=None, metavar="FOLDER", help="also write comparison.csv and the plots here")
    report.add_argument("--html", default=None, metavar="FILE",
                        help="also write the self-contained HTML report (the summary run's report.html) to FILE")

    dash = sub.add_parser("dashboard", help="serve the live comparison page for the store on 127.0.0.1")
    dash.add_argument("--output", default=DEFAULT_OUTPUT, help="where the default MLflow store lives")
    dash.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, "
                                                          "else SQLite under --output)")
    dash.add_argument("--port", type=int, default=8050, help="port (8050)")
    dash.add_argument("--host", default="127.0.0.1",
                      help="address to serve on (127.0.0.1); beyond loopback needs --allow-remote and then a login")
    dash.add_argument("--allow-remote", action="store_true", help="required to serve beyond loopback")
    dash.add_argument("--refresh", type=float, default=10.0, metavar="SECONDS",
                      help="how often the page re-reads the store (10)")

    ui = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1 for the store")
    ui.add_argument("--output", default=DEFAULT_OUTPUT, help="where the default MLflow store lives")
    ui.add_argument("--tracking-uri", default=None,
                    help="MLflow tracking URI: a sqlite:/// or file store, or an MLflow server "
                         "(which serves its own UI)")
    ui.add_argument("--port", type=int, default=5000)

    sub.add_parser("specs", help="list the built-in specs")

    # imported by its command: `medtune --help` stays fast
    from medtune.cluster.ops.service import DEFAULT_STATE_DIR

    def state_arg(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR),
                            help=f"where the cluster's token, state and MLflow store live ({DEFAULT_STATE_DIR})")

    cluster = sub.add_parser("cluster", help="start, inspect, join or stop a Ray cluster with an MLflow server")
    csub = cluster.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    up = csub.add_parser("up", help="start a Ray head (token auth on) and an MLflow server on this machine")
    up.add_argument("--host", default="127.0.0.1", help="address the dashboard, jobs API and MLflow bind to")
    up.add_argument("--allow-remote", action="store_true", help="required to bind beyond loopback")
    up.add_argument("--port", type=int, default=6379, help="Ray GCS port")
    up.add_argument("--dashboard-port", type=int, default=8265, help="dashboard and jobs API port")
    up.add_argument("--mlflow-port", type=int, default=5000)
    up.add_argument("--num-cpus", type=int, default=None)
    up.add_argument("--num-gpus", type=int, default=None)
    up.add_argument("--no-auth", action="store_true",
                    help="turn authentication off: no Ray token, no MLflow login (not recommended)")
    state_arg(up)
    down = csub.add_parser("down", help="stop exactly what `cluster up` / `cluster join` started")
    state_arg(down)
    status = csub.add_parser("status", help="nodes, CPUs/GPUs, jobs and the MLflow URL")
    status.add_argument("--address", default=None, help="a Ray address (default: the recorded cluster)")
    state_arg(status)
    join = csub.add_parser("join", help="add this machine to a cluster as a worker node")
    join.add_argument("address", help="the head's address, HOST:6379")
    join.add_argument("--token-file", default=None, help="the head's token file (default: the recorded one)")
    join.add_argument("--num-cpus", type=int, default=None)
    state_arg(join)

    submit = sub.add_parser("submit", help="run a study as a Ray job on a cluster")
    submit.add_argument("spec", help="YAML path or built-in spec name")
    submit.add_argument("--smoke", action="store_true")
    submit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    submit.add_argument("--address", default=None, help="jobs API, http://HOST:8265 (default: the recorded cluster)")
    submit.add_argument("--tracking-uri", default=None, help="MLflow server (default: the recorded cluster's)")
    submit.add_argument("--storage", default=None, metavar="ROOT",
                        help="the cluster's shared folder for the session state (an absolute path every node mounts)")
    submit.add_argument("--wait", action="store_true", help="follow the logs; exit 0 only if the job succeeded")
    state_arg(submit)

    jobs = sub.add_parser("jobs", help="list the cluster's jobs, show a job's logs or stop it")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    jl = jsub.add_parser("list")
    jlogs = jsub.add_parser("logs")
    jlogs.add_argument("job")
    jlogs.add_argument("--follow", action="store_true")
    jstop = jsub.add_parser("stop")
    jstop.add_argument("job")
    for parser in (jl, jlogs, jstop):
        parser.add_argument("--address", default=None)
        state_arg(parser)
    return p


def _uri(args: argparse.Namespace) -> str:
    # imported by its command: `medtune --help` stays fast
    from medtune.cluster.ops.service import apply_mlflow_credentials
    from medtune.cluster.runs.store import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri(args.output)
    apply_mlflow_credentials(uri)  # the recorded cluster's MLflow server: log in as its trials user
    return uri


def cmd_run(args: argparse.Namespace) -> int:
    # imported by its command: `medtune --help` stays fast
    from medtune.cluster.studies.registry import load_spec, run

    spec = load_spec(args.spec, smoke=args.smoke, overrides=args.overrides)
    origin = {"spec": args.spec, "smoke": args.smoke, "overrides": args.overrides}
    if args.storage is not None:
        origin["storage"] = args.storage
    return run(spec, args.output, tracking_uri=args.tracking_uri, address=args.address, origin=origin,
               storage=args.storage)


def cmd_tune(args: argparse.Namespace) -> int:
    """``medtune run`` with the spec's ``tuning:`` section (its defaults when the spec has none)."""
    from dataclasses import replace

    # imported by its command: `medtune --help` stays fast
    from medtune.cluster.studies.registry import load_spec, run
    from medtune.searchers.search_spaces import TuningConfig

    spec = load_spec(args.spec, smoke=args.smoke, overrides=args.overrides)
    if not hasattr(spec, "tuning"):
        raise InputError(f"medtune tune runs the LR study (study: lr); {args.spec!r} is a {spec.study!r} spec. "
                         "For your own trainable call medtune.compare(..., tune=medtune.TuningConfig(...))")
    if spec.tuning is None:
        spec = replace(spec, tuning=TuningConfig())
    origin = {"spec": args.spec, "smoke": args.smoke, "overrides": args.overrides, "command": "tune"}
    if args.storage is not None:
        origin["storage"] = args.storage
    return run(spec, args.output, tracking_uri=args.tracking_uri, address=args.address, origin=origin,
               storage=args.storage)


def cmd_suite(args: argparse.Namespace) -> int:
    # by the command that needs it: `medtune --help` stays fast
    from medtune.cluster.studies.suite import read_suite_dir, suite

    spec = args.spec
    if spec is None:  # --resume DIR alone: the spec, smoke and overrides the suite ran with
        if not isinstance(args.resume, str):
            raise InputError("give the suite SPEC (a YAML path or a built-in name such as lr-suite), or --resume DIR")
        origin = read_suite_dir(args.resume).get("origin") or {}
        if not origin.get("spec"):
            raise InputError(f"--resume {args.resume!r} does not record its spec; give SPEC too")
        spec, args.smoke = origin["spec"], bool(origin.get("smoke")) or args.smoke
        args.overrides = [*origin.get("overrides", []), *args.overrides]
    result = suite(spec, smoke=args.smoke, overrides=args.overrides, output=args.output,
                   tracking_uri=args.tracking_uri, address=args.address, resume=args.resume)
    return result.status


def cmd_resume(args: argparse.Namespace) -> int:
    # imported by its command: `medtune --help` stays fast
    from medtune.cluster.studies.registry import resume

    return resume(args.dir, address=args.address, storage=args.storage)


def cmd_report(args: argparse.Namespace) -> int:
    # imported by its command: `medtune --help` stays fast
    from medtune.cluster.studies.registry import get_study, session_study
    from medtune.dashboards.runs import mlflow_client, session_runs, study_of
    from medtune.dashboards.views import run_status

    if args.sync:
        # imported by its command: `medtune --help` stays fast
        from medtune.cluster.studies.session import read_session, sync_backlog

        session_dir = Path(args.sync).expanduser().resolve()
        info = read_session(session_dir)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        if sync_backlog(session_dir):
            return 1
        if (session_dir / "report").is_dir():  # the session finished: give it its summary run now
            session_study(info).log_session_summary(session_dir)
            print(f"[medtune] logged the summary run of session {info['session']} to {info['tracking_uri']}",
                  flush=True)
        args.tracking_uri, args.session = info["tracking_uri"], info["session"]
        args.experiment = args.experiment or info["spec"]["name"]
    if not args.experiment:
        raise InputError("give the EXPERIMENT to report on (the spec's name, e.g. lr-schedulers), "
                         "or --sync SESSION_DIR")
    uri = _uri(args)
    # A report reads a few runs: fail within seconds, not after MLflow's minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise InputError(f"no MLflow store at {uri}; pass --output DIR or --tracking-uri of the run")
    from medtune.cluster.studies.suite import build_suite_report, is_suite  # (imported by its command, as above)

    try:
        if is_suite(uri, args.experiment):  # a suite's parent run: the per-task tables and the cross-task verdict
            report, runs = build_suite_report(uri, args.experiment, args.session), None
        else:
            _, session, runs = session_runs(mlflow_client(uri), uri, args.experiment, args.session)
            report = get_study(study_of(runs)).build_report(uri, args.experiment, session)
    except InputError:
        raise
    except Exception as exc:  # an unreachable server, a file that is no MLflow store, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise InputError(f"cannot read the MLflow store {uri} ({first}); check --output / --tracking-uri") from None
    print(report.text())
    if args.save:
        paths = report.write(args.save)
        print(f"[medtune] wrote {len(paths)} files to {args.save}")
    if args.html:
        # imported by its command: `medtune --help` stays fast
        from medtune.dashboards import html_report

        target = Path(args.html).expanduser()
        if target.is_dir():
            raise InputError(f"--html {args.html} is a folder; give a file name, e.g. --html {target / 'report.html'}")
        try:
            view = report.view()
            if runs is not None:  # a suite's view says nothing of trial runs
                view.status = run_status(runs)
            path = html_report.write(view, target)
        except OSError as exc:
            raise InputError(f"cannot write the HTML report to {args.html} ({exc.strerror}); "
                             "pick a writable --html FILE") from None
        print(f"[medtune] wrote the HTML report to {path}")
    return 0


def _check_port(port: int, host: str = "127.0.0.1") -> None:
    import errno
    import socket


    if not 1 <= port <= 65535:
        raise InputError(f"--port {port} is not a port; use a number from 1 to 65535, e.g. --port 8050")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: a port in TIME_WAIT is free
        try:
            s.bind((host, port))
        except OSError as exc:
            reason = "is taken" if exc.errno == errno.EADDRINUSE else "cannot be used"
            raise InputError(f"port {port} on {host} {reason} ({exc.strerror}); pick another with --port N") from None


def cmd_dashboard(args: argparse.Namespace) -> int:
    import logging


    uri = _uri(args)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise InputError(f"no MLflow store at {uri}; pass --output DIR of a `medtune run`, or --tracking-uri URI")
    if not 0.5 <= args.refresh <= 86400:
        raise InputError(f"--refresh {args.refresh:g} is out of range; use 0.5 to 86400 seconds, e.g. --refresh 10")
    # imported by its command: `medtune --help` stays fast
    from medtune.cluster.ops.service import is_loopback

    remote = not is_loopback(args.host)
    if remote and not args.allow_remote:
        raise InputError(f"--host {args.host} would serve the dashboard beyond this machine; add --allow-remote "
                         "(it then asks for a login)")
    _check_port(args.port, args.host)
    try:
        import importlib

        importlib.import_module("dash")  # the [dashboard] extra
        # imported by its command: `medtune --help` stays fast
        from medtune.dashboards.app import create_app
    except ImportError as exc:
        raise InputError(
            f"the dashboard needs Plotly Dash ({exc}); install it with: pip install 'medtune[dashboard]'") from None
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    from medtune.cluster.studies.suite import load_view  # a suite's page, else the study's

    credentials = None
    if remote:
        # imported by its command: `medtune --help` stays fast
        from medtune.dashboards.app import login

        user, password, kept = login()
        credentials = (user, password)
        print(f"[medtune] WARNING: serving the dashboard on {args.host}, beyond this machine; log in as {user!r} "
              f"with the password in {kept}. The login travels unencrypted: use a private network or an SSH tunnel",
              file=sys.stderr, flush=True)
    app = create_app(uri, load_view, refresh_s=args.refresh, credentials=credentials)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not one line per refresh
    print(f"[medtune] dashboard for {uri} on http://{args.host}:{args.port}/ (refreshes every {args.refresh:g} s; "
          "Ctrl-C stops it)", flush=True)
    try:
        app.run(host=args.host, port=args.port, debug=False)
    except KeyboardInterrupt:
        pass
    return 0


UI_TIMEOUT_S = 120.0


def _wait_until_answers(url: str, proc: subprocess.Popen, timeout_s: float) -> bool:
    """Whether ``url`` answered HTTP before ``timeout_s`` passed and while ``proc`` ran."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return True
        except urllib.error.HTTPError:
            return True  # it answers (a login page, say)
        except OSError:
            time.sleep(0.3)
    return False


def cmd_ui(args: argparse.Namespace) -> int:
    # imported by its command: `medtune --help` stays fast
    from medtune.cluster.runs.console import verbose

    uri = _uri(args)
    if uri.startswith(("http://", "https://")):  # a tracking server serves its own UI, behind its own login
        # imported by its command: `medtune --help` stays fast
        from medtune.cluster.ops.service import mlflow_login_hint
        from medtune.cluster.runs.store import check_reachable

        check_reachable(uri)  # with this process's MLflow login: a refused one is one line, exit 2
        hint = mlflow_login_hint(uri)
        print(f"[medtune] {uri} is an MLflow server and serves its own UI: open it in a browser"
              + (f"; {hint}" if hint else ""), flush=True)
        return 0
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise InputError(f"no MLflow store at {uri}; pass --output DIR of a `medtune run`, or --tracking-uri URI")
    _check_port(args.port)
    url = f"http://127.0.0.1:{args.port}"
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
           "--port", str(args.port), "--workers", "1"]
    if not verbose():
        cmd += ["--uvicorn-opts", "--log-level warning"]
    env = dict(os.environ) if verbose() else {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = None if verbose() else subprocess.DEVNULL
    print(f"[medtune] starting the MLflow UI for {uri} ...", flush=True)
    # A process group of its own: MLflow's command starts the web server (uvicorn) as a child, which a signal
    # to the command alone would leave running; _stop_tree stops the group.
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        if not _wait_until_answers(url, proc, UI_TIMEOUT_S):
            code = proc.poll()  # the finally below stops what is left
            reason = (f"exited with status {code}" if code is not None else
                      f"did not answer on {url} within {UI_TIMEOUT_S:g} s")
            print(f"medtune: error: the MLflow UI {reason}; run `medtune ui --verbose` to see its output",
                  file=sys.stderr)
            return 1
        print(f"[medtune] MLflow UI for {uri} on {url}/ (Ctrl-C stops it)", flush=True)
        return proc.wait()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (see main)
        return 0
    finally:
        _stop_tree(proc)


def _stop_tree(proc: subprocess.Popen, grace_s: float = 10.0) -> int | None:
    """Stop ``proc`` (started with ``start_new_session``) and everything it started: its process group and any
    descendant that left it, SIGTERM first, SIGKILL to what is left after ``grace_s``; returns its exit status."""
    import psutil

    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):  # the group is gone already
            pass
        for child in tree:
            try:
                child.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            continue
        if not psutil.wait_procs(tree, timeout=grace_s)[1]:
            break
    return proc.poll()


def cmd_specs(args: argparse.Namespace) -> int:
    # imported by its command: `medtune --help` stays fast
    from medtune.cluster.studies.spec import builtin_specs, read_spec_file

    for name in builtin_specs():
        data, _ = read_spec_file(name)
        print(f"{name:20s} {data.get('description', '')}")
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    # imported by its command: `medtune --help` stays fast
    from medtune.cluster.ops import service

    state_dir = Path(args.state_dir).expanduser()
    if args.cluster_command == "up":
        cfg = service.UpConfig(
            state_dir=state_dir, host=args.host, port=args.port, dashboard_port=args.dashboard_port,
            mlflow_port=args.mlflow_port, num_cpus=args.num_cpus, num_gpus=args.num_gpus, auth=not args.no_auth,
            allow_remote=args.allow_remote,
        )
        service.print_up(service.cluster_up(cfg), state_dir)
    elif args.cluster_command == "down":
        n = service.cluster_down(state_dir)
        print(f"[medtune] stopped {n} processes of the cluster recorded in {state_dir}")
    elif args.cluster_command == "join":
        service.cluster_join(args.address, state_dir, args.token_file, args.num_cpus)
        print(f"[medtune] this machine joined {args.address} as a worker node")
    else:
        st = service.cluster_status(state_dir, args.address)
        print(f"Ray cluster {st['address']}  dashboard {st['dashboard'] or '-'}  MLflow {st['mlflow'] or '-'}")
        print(f"auth: Ray token {st['auth']['ray']}, MLflow login {st['auth']['mlflow']}")
        for n in st["nodes"]:
            print(f"  node {n['node_id']}  {n['ip']:15s} {'alive' if n['alive'] else 'DEAD '}  "
                  f"CPUs {n['cpus']:g}  GPUs {n['gpus']:g}")
        print(f"jobs: {len(st['jobs'])}")
        for j in st["jobs"]:
            print(f"  {j['id']}  {j['status']}  {j['entrypoint']}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    # imported by its command: `medtune --help` stays fast
    from medtune.cluster.cli import jobs

    client, job_id = jobs.submit(
        args.spec, Path(args.state_dir).expanduser(), args.address, args.smoke, tuple(args.overrides),
        args.tracking_uri, args.storage,
    )
    print(f"[medtune] submitted job {job_id}", flush=True)
    if not args.wait:
        print(f"[medtune] follow it with: medtune jobs logs {job_id} --follow")
        return 0
    try:
        status = jobs.follow(client, job_id)
    except KeyboardInterrupt:
        print(f"\n[medtune] stopped following; job {job_id} goes on. Stop it with: medtune jobs stop {job_id}")
        return 130
    except Exception as exc:  # the cluster went away mid-follow
        raise InputError(f"lost the jobs API while following job {job_id} ({str(exc).splitlines()[0][:160]}); "
                         f"check it later with: medtune jobs logs {job_id}") from None
    print(f"[medtune] job {job_id} {status}")
    return 0 if status == "SUCCEEDED" else 1


def cmd_jobs(args: argparse.Namespace) -> int:
    # imported by its command: `medtune --help` stays fast
    from medtune.cluster.cli import jobs

    state_dir = Path(args.state_dir).expanduser()
    if args.jobs_command == "list":
        for j in jobs.list_jobs(state_dir, args.address):
            print(f"{j['id']}  {j['status']:10s} {j['entrypoint']}")
    elif args.jobs_command == "logs":
        status = jobs.job_logs(args.job, state_dir, args.address, args.follow)
        if status is not None:
            return 0 if status == "SUCCEEDED" else 1
    else:
        stopped = jobs.stop_job(args.job, state_dir, args.address)
        print(f"[medtune] job {args.job} {'stopping' if stopped else 'was not running'}")
    return 0


COMMANDS = {
    "run": cmd_run, "tune": cmd_tune, "suite": cmd_suite, "resume": cmd_resume, "report": cmd_report,
    "dashboard": cmd_dashboard, "ui": cmd_ui, "specs": cmd_specs,
    "cluster": cmd_cluster, "submit": cmd_submit, "jobs": cmd_jobs,
}


def _terminate_as_interrupt(signum: int, frame) -> None:
    """SIGTERM stops medtune as Ctrl-C does: whatever handles SIGINT now runs (Tune's graceful stop, which
    leaves a resumable session, or Python's KeyboardInterrupt, on which each command stops what it started)."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # imported by its command: `medtune --help` stays fast
    from medtune.cluster.runs import console

    console.setup(verbose_output=args.verbose)
    from medtune.cluster.studies.session import keep_sigterm_handler  # (imported by its command, as above)

    try:
        previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
        keep_sigterm_handler(_terminate_as_interrupt)  # also once Ray runs, which installs a handler of its own
    except ValueError:  # not the main thread (main called from a thread): signals are not ours to handle
        previous = None
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # `medtune specs | head`: the reader left, which is no error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except InputError as exc:
        print(f"medtune: error: {exc}", file=sys.stderr)
        return 2
    except TrialsFailedError as exc:  # every trial failed, or a fail-fast stop: one line, no table
        print(f"medtune: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("[medtune] interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            keep_sigterm_handler(None)
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
