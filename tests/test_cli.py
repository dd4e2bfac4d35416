"""Bad input ends with exit status 2 and one line naming the field, the value and the fix.

Every case here fails before Ray starts (the tests would take minutes otherwise,
and ``ray`` is never initialised in this process).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medtune.cluster.cli.main import main
from tests.helpers_decathlon import write_decathlon


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err
    return code, err


def assert_one_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("medtune: error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize(
    "overrides, needles",
    [
        (["trian.epochs=3"], ["trian", "did you mean 'train'"]),
        (["train.epochss=3"], ["train.epochss", "did you mean 'epochs'"]),
        (["train.epochs=abc"], ["train.epochs='abc'", "integer"]),
        (["train.base_lr=fast"], ["train.base_lr='fast'", "number"]),
        (["train.min_lr=0.1"], ["min_lr=0.1", "max_lr=0.01"]),
        (["train.epochs=0"], ["train.epochs=0", ">= 1"]),
        (["seeds=[]"], ["seeds=[]", "at least one seed"]),
        (["methods=[fixed,cosin]"], ["'cosin'", "did you mean 'cosine'"]),
        (["methods=[qlearnig]"], ["did you mean 'qlearning'"]),
        (["methods=[fixed,OneCycle]"], ["'OneCycle'", "did you mean 'onecycle'"]),
        (["methods=[SCHEDULEFREE]"], ["'SCHEDULEFREE'", "did you mean 'schedulefree'"]),
        (["schedules.poly.exponent=-1"], ["schedules.poly.exponent=-1.0", "must be > 0"]),
        (["schedules.onecycle.pct_start=1.5"], ["schedules.onecycle.pct_start=1.5", "(0, 1)"]),
        (["schedules.prodigy.lr=0"], ["schedules.prodigy.lr=0.0", "positive"]),
        (["schedules.schedulefree.warmup_steps=-3"], ["schedules.schedulefree.warmup_steps=-3", ">= 0"]),
        (["schedules.warmup_cosine.warmup_epochs=-1"], ["schedules.warmup_cosine.warmup_epochs=-1", ">= 0"]),
        (["qlearning.epsilon=2"], ["qlearning.epsilon=2", "[0, 1]"]),
        (["qlearning.warm_start=/nonexistent/qtable.json"], ["warm_start", "/nonexistent/qtable.json"]),
        (["data.source=phantm"], ["data.source='phantm'", "did you mean 'phantom'"]),
        (["data.val_fraction=1.5"], ["data.val_fraction=1.5"]),
        (["resources.gpus_per_trial=-1"], ["gpus_per_trial=-1"]),
        (["data.cache_rate=1.5"], ["cache_rate=1.5", "[0, 1]"]),
        (["resources.gpus_per_trial=1.5"], ["gpus_per_trial=1.5", "whole number"]),
        (["train.epochs"], ["--set 'train.epochs'", "key=value"]),
    ],
)
def test_bad_spec_value_exits_2_with_one_line(capsys, tmp_path, overrides, needles):
    args = ["run", "lr-schedulers", "--output", str(tmp_path)]
    for item in overrides:
        args += ["--set", item]
    code, err = run_cli(capsys, *args)
    assert code == 2
    assert_one_line(err, *needles)


def test_unknown_builtin_spec_suggests_the_nearest(capsys, tmp_path):
    code, err = run_cli(capsys, "run", "lr-schedulrs", "--output", str(tmp_path))
    assert code == 2
    assert_one_line(err, "'lr-schedulrs'", "did you mean 'lr-schedulers'")


def test_missing_spec_file_exits_2(capsys, tmp_path):
    code, err = run_cli(capsys, "run", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert_one_line(err, "nope.yaml", "does not exist")


def test_malformed_yaml_names_the_line(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: study\nseeds: [0, 1\nmethods: [fixed]\n")
    code, err = run_cli(capsys, "run", str(bad))
    assert code == 2
    assert_one_line(err, "bad.yaml", "not valid YAML", "line")


def test_spec_that_is_not_a_mapping_exits_2(capsys, tmp_path):
    bad = tmp_path / "list.yaml"
    bad.write_text("- fixed\n- cosine\n")
    code, err = run_cli(capsys, "run", str(bad))
    assert code == 2
    assert_one_line(err, "list.yaml", "mapping")


def test_missing_decathlon_folder_exits_2_before_any_trial(capsys, tmp_path):
    code, err = run_cli(
        capsys, "run", "lr-schedulers", "--output", str(tmp_path / "out"),
        "--set", "data.source=decathlon", "--set", f"data.path={tmp_path / 'Task04_Hippocampus'}",
    )
    assert code == 2
    assert_one_line(err, "Task04_Hippocampus")
    assert not (tmp_path / "out").exists()  # nothing was started or written


def test_corrupt_nifti_exits_2_naming_the_file(capsys, tmp_path):
    root = write_decathlon(tmp_path / "Task04_Hippocampus", num_cases=4)
    victim = sorted((root / "labelsTr").iterdir())[1]
    victim.write_bytes(b"not a nifti at all")
    code, err = run_cli(
        capsys, "run", "lr-schedulers", "--output", str(tmp_path / "out"),
        "--set", "data.source=decathlon", "--set", f"data.path={root}",
    )
    assert code == 2
    assert_one_line(err, victim.name)


def _nan_voxel(root):
    path = root / "imagesTr" / "hippocampus_001.nii.gz"
    image = np.asanyarray(nib.load(path).dataobj).copy()
    image[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(image, np.eye(4)), path)
    return path


def _singular_affine(root):
    path = root / "imagesTr" / "hippocampus_002.nii.gz"
    img = nib.Nifti1Image(np.asanyarray(nib.load(path).dataobj).copy(), np.eye(4))
    img.set_qform(None, code=0)
    img.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)
    nib.save(img, path)
    return path


def _fractional_label(root):
    path = root / "labelsTr" / "hippocampus_003.nii.gz"
    label = np.asanyarray(nib.load(path).dataobj).astype(np.float32)
    label[label == 2] = 1.6
    nib.save(nib.Nifti1Image(label, np.eye(4)), path)
    return path


def _modality_dropped(root):
    path = root / "imagesTr" / "hippocampus_001.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(nib.load(path).dataobj)[..., :1].copy(), np.eye(4)), path)
    return path


@pytest.mark.parametrize("modalities, breaks, needle", [
    (1, _nan_voxel, "NaN or infinite"),
    (1, _singular_affine, "singular affine"),
    (1, _fractional_label, "non-integer"),
    (2, _modality_dropped, "'modality' lists 2"),
], ids=["nan-voxel", "singular-affine", "fractional-label", "modality-count"])
def test_bad_decathlon_file_exits_2_naming_it_before_any_trial(capsys, tmp_path, modalities, breaks, needle):
    root = write_decathlon(tmp_path / "Task01_BrainTumour", num_cases=4, modalities=modalities)
    victim = breaks(root)
    code, err = run_cli(
        capsys, "run", "lr-schedulers", "--smoke", "--output", str(tmp_path / "out"),
        "--set", "data.source=decathlon", "--set", f"data.path={root}",
    )
    assert code == 2
    assert_one_line(err, victim.name, needle)
    assert not (tmp_path / "out").exists()  # nothing was started or written


@pytest.mark.parametrize("overrides, needles", [
    (["model.name=SegResNett"], ["model.name='SegResNett'", "did you mean 'SegResNet'"]),
    (["model.name=SegResNet", "model.kwargs={init_filter: 8}"],
     ["model.kwargs.init_filter=8", "SegResNet", "did you mean 'init_filters'"]),
    (["model.kwargs={out_channels: 5}"], ["model.kwargs.out_channels=5", "from the data"]),
    (["model.name=SwinUNETR"], ["model.name='SwinUNETR'", "data.spatial_size=[24, 24, 24]"]),
    (["train.optimizer=adamm"], ["train.optimizer='adamm'", "did you mean 'adam'"]),
    (["train.loss=dicefocal"], ["train.loss='dicefocal'", "did you mean 'dice_focal'"]),
    (["train.nesterov=true"], ["train.nesterov=True", "optimizer='sgd'"]),
    (["data.patch_size=[32,32,32]"], ["data.patch_size=(32, 32, 32)", "at most spatial_size=[24, 24, 24]"]),
])
def test_bad_network_optimizer_or_patch_setting_exits_2_before_any_trial(capsys, tmp_path, overrides, needles):
    args = ["run", "lr-schedulers", "--smoke", "--output", str(tmp_path / "out")]
    for item in overrides:
        args += ["--set", item]
    code, err = run_cli(capsys, *args)
    assert code == 2
    assert_one_line(err, *needles)
    assert not (tmp_path / "out").exists()


def test_resume_of_a_folder_that_is_no_session_exits_2(capsys, tmp_path):
    code, err = run_cli(capsys, "resume", str(tmp_path))
    assert code == 2
    assert_one_line(err, str(tmp_path), "medtune.json")


def test_console_script_prints_no_traceback(tmp_path):
    exe = Path(sys.executable).with_name("medtune")
    proc = subprocess.run(
        [str(exe), "run", "lr-schedulers", "--set", "train.epochs=-3", "--output", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env={**os.environ},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "medtune: error: train.epochs=-3 must be >= 1"


def test_report_of_a_file_that_is_no_mlflow_store_exits_2(capsys, tmp_path):
    bogus = tmp_path / "mlflow.db"
    bogus.write_text("this is not a database")
    code, err = run_cli(capsys, "report", "lr-schedulers", "--tracking-uri", f"sqlite:///{bogus}")
    assert code == 2
    assert_one_line(err, str(bogus))


def test_damaged_session_file_exits_2_on_resume(capsys, tmp_path):
    (tmp_path / "medtune.json").write_text("{not json")
    code, err = run_cli(capsys, "resume", str(tmp_path))
    assert code == 2
    assert_one_line(err, "medtune.json", "damaged")


def test_output_that_is_a_file_exits_2(capsys, tmp_path):
    target = tmp_path / "runs"
    target.write_text("")
    code, err = run_cli(capsys, "run", "lr-schedulers", "--output", str(target))
    assert code == 2
    assert_one_line(err, "--output", "is a file")


def test_warm_start_file_that_is_no_qtable_exits_2_before_ray(capsys, tmp_path):
    bad = tmp_path / "qtable.json"
    bad.write_text('{"q": {"improving": {}}}')
    code, err = run_cli(capsys, "run", "lr-schedulers", "--output", str(tmp_path / "out"),
                        "--set", f"qlearning.warm_start={bad}")
    assert code == 2
    assert_one_line(err, "qtable.json", "lacks")
    assert not (tmp_path / "out").exists()


def test_qlearning_warm_without_a_warm_start_exits_2(capsys, tmp_path):
    code, err = run_cli(capsys, "run", "lr-schedulers", "--output", str(tmp_path),
                        "--set", "methods=[qlearning,qlearning_warm]")
    assert code == 2
    assert_one_line(err, "qlearning_warm", "warm_start")


def test_cluster_up_beyond_loopback_needs_allow_remote(capsys, tmp_path):
    code, err = run_cli(capsys, "cluster", "up", "--host", "0.0.0.0", "--state-dir", str(tmp_path))
    assert code == 2
    assert_one_line(err, "--host='0.0.0.0'", "--allow-remote")
    assert not (tmp_path / "state.json").exists()


def test_cluster_up_with_clashing_ports_exits_2(capsys, tmp_path):
    code, err = run_cli(capsys, "cluster", "up", "--port", "8265", "--state-dir", str(tmp_path))
    assert code == 2
    assert_one_line(err, "must differ")


def test_cluster_down_without_a_cluster_exits_2(capsys, tmp_path):
    code, err = run_cli(capsys, "cluster", "down", "--state-dir", str(tmp_path))
    assert code == 2
    assert_one_line(err, "no medtune cluster recorded", str(tmp_path))


def test_submit_without_any_cluster_exits_2(capsys, tmp_path):
    code, err = run_cli(capsys, "submit", "lr-schedulers", "--smoke", "--state-dir", str(tmp_path))
    assert code == 2
    assert_one_line(err, "medtune cluster up", "--address")


def test_run_against_an_unreachable_mlflow_server_exits_2_before_any_trial(capsys, tmp_path):
    code, err = run_cli(capsys, "run", "lr-schedulers", "--smoke", "--output", str(tmp_path / "out"),
                        "--tracking-uri", "http://127.0.0.1:9")
    assert code == 2
    assert_one_line(err, "http://127.0.0.1:9", "unreachable")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "overrides, needles",
    [
        (["train.apga.lambda_zeros=-0.1"], ["train.apga.lambda_zeros=-0.1", ">= 0"]),
        (["few_shot=500"], ["few_shot=500", "set few_shot to"]),
        (["methods=[none,cutot]"], ["'cutot'", "did you mean 'cutout'"]),
        (["methods=[none,RandAugment]"], ["'RandAugment'", "did you mean 'randaugment'"]),
        (["train.randaugment_magnitude=40"], ["randaugment_magnitude=40", "1..29"]),
        (["regimes=[ful]"], ["'ful'", "did you mean 'full'"]),
        (["data.few_shot=10"], ["data.few_shot=10", "top-level few_shot"]),
        (["train.classifier=vgg"], ["classifier='vgg'"]),
    ],
)
def test_bad_apga_spec_exits_2_with_one_line(capsys, tmp_path, overrides, needles):
    args = ["run", "apga", "--output", str(tmp_path)]
    for item in overrides:
        args += ["--set", item]
    code, err = run_cli(capsys, *args)
    assert code == 2
    assert_one_line(err, *needles)
    assert not (tmp_path / "mlflow.db").exists()  # nothing started


def test_apga_images_of_mixed_sizes_exit_2_naming_both_files(capsys, tmp_path):
    from PIL import Image

    for cls, size in (("a", 32), ("b", 28)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((size, size), 40 * i, np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    code, err = run_cli(capsys, "run", "apga", "--output", str(tmp_path / "out"), "--set", "data.source=folder",
                        "--set", f"data.path={tmp_path / 'imgs'}", "--set", "few_shot=1")
    assert code == 2
    assert_one_line(err, "differ in size", "32x32", "28x28")


def test_unknown_study_exits_2(capsys, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: x\nstudy: apgaa\n")
    code, err = run_cli(capsys, "run", str(spec), "--output", str(tmp_path))
    assert code == 2
    assert_one_line(err, "study='apgaa'", "did you mean 'apga'")


@pytest.mark.parametrize(
    "spec, overrides, needles",
    [
        ("active-learning", ["budget=99999"], ["budget=99999", "larger than the training pool", "at most"]),
        ("active-learning", ["loop.n_s=0"], ["loop.n_s=0", "n_s >= 1"]),
        ("active-learning", ["methods=[drl]"], ["'drl'", "did you mean 'drla'"]),
        ("active-learning", ["methods=[BADGE]"], ["'BADGE'", "did you mean 'badge'"]),
        ("active-learning", ["methods=[stratified-random]"], ["did you mean 'stratified_random'"]),
        ("active-learning", ["budget=500"], ["budget=500", "'all' needs every label"]),
        ("paser", ["lams=[0.5,1.5]"], ["lams: 1.5", "outside [0, 1]"]),
        ("paser", ["lams=[]"], ["lams=[]", "empty grid"]),
        ("paser", ["router.grid=5"], ["router.grid=5", "does not divide the image size 32"]),
        ("paser", ["router.grid=0"], ["router.grid=0", "empty or invalid patch grid"]),
        ("paser", ["baselines=[smal]"], ["'smal'", "did you mean 'small'"]),
    ],
)
def test_bad_active_learning_and_paser_specs_exit_2_with_one_line(capsys, tmp_path, spec, overrides, needles):
    args = ["run", spec, "--output", str(tmp_path)]
    for item in overrides:
        args += ["--set", item]
    code, err = run_cli(capsys, *args)
    assert code == 2
    assert_one_line(err, *needles)
    assert not (tmp_path / "mlflow.db").exists()


def test_active_learning_labels_outside_the_class_range_exit_2(capsys, tmp_path):
    path = tmp_path / "bad.npz"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (30, 8, 8), dtype=np.uint8)
    labels = np.concatenate([np.arange(3).repeat(10)]).reshape(-1, 1)
    bad = labels.copy()
    bad[0] = 7
    np.savez(path, train_images=images, train_labels=bad, val_images=images[:6], val_labels=labels[:6],
             test_images=images[:6], test_labels=labels[:6])
    code, err = run_cli(capsys, "run", "active-learning", "--output", str(tmp_path / "out"),
                        "--set", "data.source=medmnist", "--set", f"data.path={path}")
    assert code == 2
    assert "7" in err and len(err.strip().splitlines()) == 1


def _store(tmp_path: Path, capsys, experiment: str | None = None) -> Path:
    """An empty SQLite MLflow store (with ``experiment`` created, if given); MLflow's set-up lines dropped."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.search_experiments()  # creates the store
    if experiment:
        client.create_experiment(experiment)
    capsys.readouterr()
    return tmp_path


def test_dashboard_without_a_store_exits_2(capsys, tmp_path):
    code, err = run_cli(capsys, "dashboard", "--output", str(tmp_path / "nothing"))
    assert code == 2
    assert_one_line(err, "no MLflow store at sqlite:///", "nothing/mlflow.db", "--output DIR")


def test_dashboard_on_a_taken_port_exits_2(capsys, tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = run_cli(capsys, "dashboard", "--output", str(_store(tmp_path, capsys)), "--port", str(port))
    assert code == 2
    assert_one_line(err, f"port {port} on 127.0.0.1 is taken", "--port N")


@pytest.mark.parametrize("args, needles", [
    (["--port", "0"], ["--port 0 is not a port", "1 to 65535"]),
    (["--refresh", "0"], ["--refresh 0 is out of range", "0.5 to 86400"]),
    (["--refresh", "inf"], ["--refresh inf is out of range"]),
])
def test_dashboard_bad_option_exits_2(capsys, tmp_path, args, needles):
    code, err = run_cli(capsys, "dashboard", "--output", str(_store(tmp_path, capsys)), *args)
    assert code == 2
    assert_one_line(err, *needles)


def test_report_html_of_an_experiment_without_trials_exits_2_and_writes_nothing(capsys, tmp_path):
    out = tmp_path / "report.html"
    code, err = run_cli(capsys, "report", "empty", "--output", str(_store(tmp_path, capsys, "empty")), "--html",
                        str(out))
    assert code == 2 and not out.exists()
    assert_one_line(err, "'empty' has no trial runs", "medtune run SPEC")


def test_report_of_runs_another_logger_wrote_says_so(capsys, tmp_path):
    """Runs of Ray's own MLflowLoggerCallback (no medtune tags) are not silently 'no trial runs'."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("tune-logged", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp, tags={"trial_name": "train_fn_00000"})  # what MLflowLoggerCallback writes
    client.log_metric(run.info.run_id, "val_acc", 0.9, step=1)
    assert main(["report", "tune-logged", "--output", str(tmp_path)]) == 2
    ours = [line for line in capsys.readouterr().err.splitlines() if line.startswith("medtune")]
    assert len(ours) == 1 and "has runs, but none that medtune logged" in ours[0] and "medtune.compare" in ours[0]


def _answers(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@pytest.mark.integration
@pytest.mark.parametrize("command", ["ui", "dashboard"])
def test_sigterm_stops_the_server_and_every_process_it_started(tmp_path, capsys, command):
    """``medtune ui`` (an MLflow server with its web server as a child) and ``medtune dashboard`` stopped with
    SIGTERM, as a service manager or ``kill`` stops them: exit 0, the port closed, no process of theirs left."""
    import psutil

    from tests.helpers_net import listen_port

    port = listen_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("medtune")), command, "--output",
                             str(_store(tmp_path, capsys)), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None and not _answers(url):
            time.sleep(0.3)
        assert proc.poll() is None and _answers(url), f"medtune {command} never answered on {url}"
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        if command == "ui":
            assert len(tree) >= 2, "the MLflow server is not a child of medtune ui"
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, output[-2000:]
        _, alive = psutil.wait_procs(tree, timeout=60)
        assert alive == [], f"left running: {[' '.join(p.cmdline())[:120] for p in alive]}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _answers(url):
            time.sleep(0.3)
        assert not _answers(url), f"{url} still answers after medtune {command} stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_decathlon_run_prints_its_plan_and_writes_plan_json(tmp_path):
    """`medtune run` on a tiny 4D Decathlon task with nothing else set: the plan is printed before any trial,
    written to the session folder and logged to the summary run (a process of its own, as a user runs it)."""
    import json

    from tests.test_lr_study import medtune

    root = write_decathlon(tmp_path / "Task01_BrainTumour", num_cases=5, shape=(16, 18, 14), modalities=2)
    proc = medtune("run", "lr-schedulers", "--smoke", "--output", str(tmp_path / "out"),
                   "--set", "data.source=decathlon", "--set", f"data.path={root}", "--set", "methods=[fixed]",
                   "--set", "train.epochs=1")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert "plan (data.plan=auto" in text and text.index("patch size") < text.index("trial-epochs to run")
    (session,) = [p for p in (tmp_path / "out").iterdir() if p.name.startswith("lr-schedulers-")]
    plan = json.loads((session / "plan.json").read_text())
    assert {"spacing", "patch_size", "batch_size", "network", "cases"} <= set(plan)
    assert [c["shape"] for c in plan["cases"]] == [[16, 18, 14]] * 5 and plan["batch_size"] >= 2
    assert list((tmp_path / "out").rglob("mlartifacts/*/artifacts/plan.json"))
