"""The Q-learning scheduler with 200 concurrent trials on a 3-node Ray cluster: is a decision's cost flat?

A real 3-node cluster (``ray.cluster_utils.Cluster``: a head and two worker
nodes, 1 CPU each, authentication off) and a driver connected to it. The
scheduler is the real ``QLearningLRScheduler`` with its default delivery: the
new LR is written with ``ray.get`` to the real ``LRMailbox`` actor (a unique
name per scheduler, created by ``open_mailbox`` on the driver's node), plus the
journal record and ``trial.set_config`` it always does. It is warm-started from
a Q-table whose greedy action is ``increase`` everywhere, with epsilon 0,
patience = cooldown = 0 and min_history = 2, so every result from epoch 2 on
decides and changes the LR (a "decision" below).

Candidate: one scheduler with 200 ``FakeTrial`` objects. Reference: five
schedulers with 10 trials each (more samples for a stable p99). Every trial
reports 12 epochs of a rising Dice / falling loss, round-robin within a
scheduler; the two are interleaved epoch by epoch (epoch e of every reference
scheduler, then epoch e of the candidate), so drift hits both alike. Only
decisions are timed; the first one of each scheduler (it creates or looks up
the mailbox actor) is dropped.

The trainable's side: ``read_mailbox`` (by-name lookup + actor call, as
``train_segmentation`` does every epoch) from a Ray task pinned with
``NodeAffinitySchedulingStrategy`` to each of the 3 nodes in turn, 200 reads
of the 200 trials' LRs per node (the first read dropped), checked against the
LRs the scheduler set.

Target ("flat"): with 200 trials, the median and the p99 of a decision are
each within 1.5x of those with 10 trials.
"""

from __future__ import annotations

import time

from tests.bench._common import FakeTrial, median, pct, report, write_greedy_qtable

TARGET = 1.5
N_SMALL, N_SMALL_SCHEDULERS = 10, 5
N_LARGE = 200
N_EPOCHS = 12
N_READS = 201


def make_scheduler(tmp_path, tag: str):
    from medtune.searchers.qlearning_agent import QLearningConfig
    from medtune.searchers.qlearning_scheduler import QLearningLRScheduler

    config = QLearningConfig(
        base_lr=1e-3, min_lr=1e-9, max_lr=1.0, patience=0, cooldown=0, min_history=2,
        epsilon=0.0, epsilon_min=0.0,
    )
    return QLearningLRScheduler(
        config, state_path=tmp_path / f"journal-{tag}.jsonl", mailbox=f"medtune-bench-nodes-{tag}-{time.time_ns()}",
        warm_start=write_greedy_qtable(tmp_path / f"warm-{tag}.json"),
    )


def run_epoch(scheduler, trials, epoch: int, changes: list[float], quiet: list[float]) -> None:
    perf = time.perf_counter
    for k, trial in enumerate(trials):
        result = {"epoch": epoch, "training_iteration": epoch,
                  "dice": 0.3 + 0.04 * epoch + 0.0001 * k, "val_loss": 1.0 - 0.05 * epoch}
        before = trial.config["lr"]
        t0 = perf()
        scheduler.on_trial_result(None, trial, result)
        dt = perf() - t0
        (changes if trial.config["lr"] != before else quiet).append(dt)


def mailbox_node(name: str) -> str | None:
    """The node the mailbox actor lives on (the State API needs the dashboard; None when it is off)."""
    try:
        from ray.util.state import list_actors

        return list_actors(filters=[("name", "=", name)])[0]["node_id"]
    except Exception:
        return None


def measure_reads(nodes: list[dict], mailbox: str, trial_ids: list[str]) -> dict[str, dict]:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=1)
    def reads(name: str, ids: list[str], n: int) -> tuple[str, list[float], list[float]]:
        from medtune.searchers.qlearning_scheduler import read_mailbox

        times, lrs = [], []
        for i in range(n):
            t0 = time.perf_counter()
            lr = read_mailbox(name, ids[i % len(ids)])
            times.append(time.perf_counter() - t0)
            lrs.append(lr)
        return ray.get_runtime_context().get_node_id(), times, lrs

    out = {}
    for node in nodes:  # one node at a time: the 2 cores are not shared by three readers
        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ran_on, times, lrs = ray.get(reads.options(scheduling_strategy=strategy).remote(mailbox, trial_ids, N_READS))
        assert ran_on == node["NodeID"]
        out[node["NodeID"]] = {"times": times[1:], "lrs": lrs}
    return out


def test_bench_scheduler_decision_latency_200_vs_10_trials_3_nodes(tmp_path, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        nodes = [n for n in ray.nodes() if n["Alive"]]
        assert len(nodes) == 3, nodes
        driver_node = ray.get_runtime_context().get_node_id()
        head_node = next(n["NodeID"] for n in nodes
                         if n["RayletSocketName"] == cluster.head_node.raylet_socket_name)

        small = [make_scheduler(tmp_path, f"s{j}") for j in range(N_SMALL_SCHEDULERS)]
        small_trials = [[FakeTrial(f"s{j}_t{i:03d}", {"method": "qlearning", "seed": i, "lr": 1e-3})
                         for i in range(N_SMALL)] for j in range(N_SMALL_SCHEDULERS)]
        large = make_scheduler(tmp_path, "l")
        large_trials = [FakeTrial(f"l_t{i:03d}", {"method": "qlearning", "seed": i, "lr": 1e-3})
                        for i in range(N_LARGE)]

        small_changes: list[list[float]] = [[] for _ in small]
        small_quiet: list[float] = []
        large_changes: list[float] = []
        large_quiet: list[float] = []
        t_start = time.perf_counter()
        for epoch in range(1, N_EPOCHS + 1):
            for sched, trials, changes in zip(small, small_trials, small_changes):
                run_epoch(sched, trials, epoch, changes, small_quiet)
            run_epoch(large, large_trials, epoch, large_changes, large_quiet)
        elapsed = time.perf_counter() - t_start
        first_small = [c[0] for c in small_changes]
        first_large = large_changes[0]
        small_all = [x for c in small_changes for x in c[1:]]
        large_all = large_changes[1:]

        # Every change reached the mailbox; the trainable side reads it on each node.
        box = ray.get_actor(large.mailbox_name)
        for trial in large_trials[:: N_LARGE // 20]:
            assert ray.get(box.get.remote(trial.trial_id)) == trial.config["lr"]
        box_node = mailbox_node(large.mailbox_name)
        reads = measure_reads(nodes, large.mailbox_name, [t.trial_id for t in large_trials])
        expected = {t.trial_id: t.config["lr"] for t in large_trials}
        for r in reads.values():
            ids = [large_trials[i % N_LARGE].trial_id for i in range(N_READS)]
            assert r["lrs"] == [expected[i] for i in ids]
        journal_lines = sum(1 for _ in open(large.state_path))
    finally:
        ray.shutdown()
        cluster.shutdown()

    assert len(small_all) == N_SMALL_SCHEDULERS * (N_SMALL * (N_EPOCHS - 1) - 1)
    assert len(large_all) == N_LARGE * (N_EPOCHS - 1) - 1
    assert journal_lines == N_LARGE * N_EPOCHS
    ms = 1e3
    m10, m200 = median(small_all), median(large_all)
    p10, p200 = pct(small_all, 0.99), pct(large_all, 0.99)
    r_med, r_p99 = m200 / m10, p200 / p10
    ok = r_med <= TARGET and r_p99 <= TARGET

    def node_row(node_id: str) -> str:
        t = reads[node_id]["times"]
        where = ["head" if node_id == head_node else "worker"]
        if node_id == driver_node:
            where.append("driver")
        if node_id == box_node:
            where.append("mailbox")
        return (f"median {median(t) * ms:.3f} ms, p99 {pct(t, 0.99) * ms:.3f} ms, max {max(t) * ms:.3f} ms "
                f"({', '.join(where)})")

    rows = [
        ("cluster", "ray.cluster_utils.Cluster: 3 nodes x 1 CPU, auth off, one IP; the driver attaches to "
                    f"the {'head' if driver_node == head_node else 'a worker'} node"),
        ("calls", f"{N_SMALL_SCHEDULERS} x {N_SMALL} + {N_LARGE} trials x {N_EPOCHS} epochs, interleaved by epoch, "
                  f"{elapsed:.2f} s in all"),
        ("decisions timed, 10 trials", f"{len(small_all)} (first of each scheduler dropped: "
                                       f"{' '.join(f'{x * ms:.1f}' for x in first_small)} ms)"),
        ("decisions timed, 200 trials", f"{len(large_all)} (first dropped: {first_large * ms:.1f} ms); "
                                        f"journal lines {journal_lines}"),
        ("decision, 10 trials", f"median {m10 * ms:.3f} ms, p90 {pct(small_all, 0.9) * ms:.3f} ms, "
                                f"p99 {p10 * ms:.3f} ms, max {max(small_all) * ms:.3f} ms"),
        ("decision, 200 trials", f"median {m200 * ms:.3f} ms, p90 {pct(large_all, 0.9) * ms:.3f} ms, "
                                 f"p99 {p200 * ms:.3f} ms, max {max(large_all) * ms:.3f} ms"),
        ("no-decision calls (epoch 1)", f"median {median(small_quiet) * ms:.3f} ms (10) vs "
                                        f"{median(large_quiet) * ms:.3f} ms (200)"),
    ]
    for i, node in enumerate(nodes):
        rows.append((f"read_mailbox on node {i + 1} ({node['NodeID'][:8]})", node_row(node["NodeID"])))
    rows += [
        ("RATIO 200/10 median", f"{r_med:.2f}"),
        ("RATIO 200/10 p99", f"{r_p99:.2f}"),
        ("target", f"both ratios <= {TARGET:.1f}"),
    ]
    report("QLearningLRScheduler decision latency, 200 vs 10 concurrent trials, LRMailbox on a 3-node cluster",
           rows, "MET" if ok else "MISSED")
    assert ok, f"200-trial decisions: median x{r_med:.2f}, p99 x{r_p99:.2f} of 10-trial ones (target <= {TARGET})"
