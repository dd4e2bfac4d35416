"""The ``medtune`` command.

    medtune run SPEC [--smoke] [--set key=value ...] [--output DIR] [--address RAY] [--tracking-uri URI]
    medtune resume DIR [--address RAY]
    medtune report EXPERIMENT [--output DIR | --tracking-uri URI] [--session NAME] [--save FOLDER]
    medtune ui [--output DIR | --tracking-uri URI] [--port N]
    medtune specs

Bad input (a spec, a data folder, a tracking store) ends with one line on
stderr naming the problem, the value and the fix, and exit status 2, before
any trial starts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

DEFAULT_OUTPUT = "./medtune-runs"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="medtune",
        description="Reinforcement-learning training control for medical imaging on Ray Tune, tracked in MLflow.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a study spec (a YAML path or a built-in name such as lr-schedulers)")
    run.add_argument("spec", help="YAML path or built-in spec name (see `medtune specs`)")
    run.add_argument("--smoke", action="store_true", help="shrink every budget: finishes in about a minute on 2 CPUs")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a spec value, e.g. --set train.epochs=10 --set seeds=[0,1]")
    run.add_argument("--output", default=DEFAULT_OUTPUT, help=f"folder for sessions and the default MLflow store ({DEFAULT_OUTPUT})")
    run.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    run.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else SQLite under --output)")

    resume = sub.add_parser("resume", help="continue an interrupted session with the Q-table it had")
    resume.add_argument("dir", help="the session folder printed by `medtune run`")
    resume.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")

    report = sub.add_parser("report", help="rebuild an experiment's comparison from MLflow alone")
    report.add_argument("experiment", help="MLflow experiment name (the spec's name, e.g. lr-schedulers)")
    report.add_argument("--session", default=None, help="a particular session (default: the latest)")
    report.add_argument("--output", default=DEFAULT_OUTPUT, help="where the default MLflow store lives")
    report.add_argument("--tracking-uri", default=None, help="MLflow tracking URI")
    report.add_argument("--save", default=None, metavar="FOLDER", help="also write comparison.csv and the plots here")

    ui = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1 for the store")
    ui.add_argument("--output", default=DEFAULT_OUTPUT, help="where the default MLflow store lives")
    ui.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (a sqlite:/// or file store)")
    ui.add_argument("--port", type=int, default=5000)

    sub.add_parser("specs", help="list the built-in specs")
    return p


def _uri(args: argparse.Namespace) -> str:
    from cluster.store import default_tracking_uri

    return args.tracking_uri or default_tracking_uri(args.output)


def cmd_run(args: argparse.Namespace) -> int:
    from cluster.lr_study import run_lr_study
    from cluster.spec import load_spec

    spec = load_spec(args.spec, smoke=args.smoke, overrides=args.overrides)
    origin = {"spec": args.spec, "smoke": args.smoke, "overrides": args.overrides}
    return run_lr_study(spec, args.output, tracking_uri=args.tracking_uri, address=args.address, origin=origin)


def cmd_resume(args: argparse.Namespace) -> int:
    from cluster.lr_study import resume_lr_study

    return resume_lr_study(args.dir, address=args.address)


def cmd_report(args: argparse.Namespace) -> int:
    from dashboards.report import build_report, write_artifacts
    from trainables.errors import InputError

    uri = _uri(args)
    # A report reads a few runs: fail within seconds, not after MLflow's minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise InputError(f"no MLflow store at {uri}; pass --output DIR or --tracking-uri of the run")
    try:
        report = build_report(uri, args.experiment, args.session)
    except InputError:
        raise
    except Exception as exc:  # an unreachable server, a file that is no MLflow store, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise InputError(f"cannot read the MLflow store {uri} ({first}); check --output / --tracking-uri") from None
    print(report.text())
    if args.save:
        paths = write_artifacts(report, args.save)
        print(f"[medtune] wrote {len(paths)} files to {args.save}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    uri = _uri(args)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(args.port)]
    print(f"[medtune] MLflow UI for {uri} on http://127.0.0.1:{args.port} (Ctrl-C stops it)", flush=True)
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


def cmd_specs(args: argparse.Namespace) -> int:
    from cluster.spec import builtin_specs, read_spec_file

    for name in builtin_specs():
        data, _ = read_spec_file(name)
        print(f"{name:20s} {data.get('description', '')}")
    return 0


COMMANDS = {"run": cmd_run, "resume": cmd_resume, "report": cmd_report, "ui": cmd_ui, "specs": cmd_specs}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    from trainables.errors import InputError

    try:
        return COMMANDS[args.command](args)
    except InputError as exc:
        print(f"medtune: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
