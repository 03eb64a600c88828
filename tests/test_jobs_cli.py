"""`prune` CLI with fine-tuning/compaction/latency, and the GUI's JobRunner (one job at a time, errors, cancel)."""
from __future__ import annotations

import json
import threading
import time

import pytest
import torch

import explorer.core.train.finetune as ft
from explorer import cli
from explorer.core.errors import Cancelled, ExplorerError
from explorer.core.jobs import Progress
from explorer.core.model.nets import DigitsCNN
from explorer.core.session import Session

BLOCK_KEYS = {"accuracy", "params", "nonzero_params", "macs", "size_bytes", "latency_ms"}


def run_cli(*argv) -> int:
    return cli.main(["prune", *map(str, argv)])


def read_report(out) -> dict:
    return json.loads((out / "report.json").read_text())


# ---------------------------------------------------------------------------- CLI: compact + latency

def test_prune_channel_compact_writes_compact_model_and_report(tmp_path):
    out = tmp_path / "out"
    assert run_cli("--sparsity", 0.5, "--granularity", "channel", "--compact", "--out", out,
                   "--latency-runs", 3) == 0
    assert (out / "model_compact.pt").is_file() and (out / "model.pt").is_file()
    r = read_report(out)
    for block in ("dense", "pruned", "compact"):
        assert BLOCK_KEYS <= set(r[block]), block
    d, p, c = r["dense"], r["pruned"], r["compact"]
    assert c["macs"] < d["macs"] and c["params"] < d["params"]
    assert c["nonzero_params"] <= c["params"] and c["size_bytes"] < d["size_bytes"]
    for block in (d, p, c):
        assert isinstance(block["latency_ms"], float) and block["latency_ms"] > 0
    assert r["latency"]["runs"] == 3 and r["latency"]["dense"]["runs"] == 3
    assert r["latency"]["dense"]["p10_ms"] <= r["latency"]["dense"]["median_ms"] <= r["latency"]["dense"]["p90_ms"]
    # the compact block describes the file that was written
    compact = torch.load(out / "model_compact.pt", map_location="cpu", weights_only=False).eval()
    assert sum(t.numel() for t in compact.parameters()) == c["params"]
    convs = [m.out_channels for m in compact.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [16, 16, 32, 32]
    # ... and it computes what the pruned state_dict computes (loaded into the plain architecture)
    pruned = DigitsCNN()
    pruned.load_state_dict(torch.load(out / "model.pt", map_location="cpu", weights_only=True))
    pruned.eval()
    x = Session.open("digits-cnn").dataset.example_input(16)
    with torch.inference_mode():
        a, b = pruned(x), compact(x)
    assert float((a - b).abs().max()) <= 1e-4 * float(a.abs().max())
    assert abs(c["accuracy"] - p["accuracy"]) <= 100 / 360 + 1e-9
    assert c["macs"] == 382_208


def finetune_layers_ok(r: dict, sparsity: float) -> None:
    assert r["sparsity"] == pytest.approx(sparsity, abs=1e-3)
    for layer in r["layers"]:
        n = layer["params"]
        assert layer["params"] - layer["nonzero"] == round(sparsity * n), layer["name"]


def test_prune_iterative_finetune_reaches_the_requested_sparsity(tmp_path):
    out = tmp_path / "out"
    assert run_cli("--model", "digits-mlp", "--sparsity", 0.5, "--finetune-epochs", 1, "--iterative-steps", 2,
                   "--no-latency", "--out", out) == 0
    r = read_report(out)
    finetune_layers_ok(r, 0.5)
    assert r["finetune"]["schedule"] == "iterative" and r["finetune"]["steps"] == 2
    assert r["finetune"]["epochs"] == 1
    assert r["pruned"]["accuracy"] is not None and r["pruned"]["latency_ms"] is None
    # model.pt holds the exact zeros the report counts
    sd = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert sum(int((sd[f"{l['name']}.weight"] == 0).sum()) for l in r["layers"]) == \
        sum(l["params"] - l["nonzero"] for l in r["layers"])


def test_prune_agp_finetune_reaches_the_requested_sparsity(tmp_path):
    out = tmp_path / "out"
    assert run_cli("--model", "digits-mlp", "--sparsity", 0.6, "--finetune-epochs", 1, "--schedule", "agp",
                   "--no-latency", "--out", out) == 0
    r = read_report(out)
    finetune_layers_ok(r, 0.6)
    assert r["finetune"]["schedule"] == "agp"


@pytest.mark.parametrize("argv", [["--schedule", "agp"], ["--iterative-steps", "3"],
                                  ["--schedule", "iterative"]], ids=["agp", "steps", "iterative"])
def test_schedule_without_finetune_epochs_exits_2(tmp_path, capsys, argv):
    out = tmp_path / "out"
    rc = run_cli("--model", "digits-mlp", "--sparsity", 0.5, *argv, "--no-latency", "--out", out)
    assert rc == 2
    err = capsys.readouterr().err
    assert "--finetune-epochs" in err and "Traceback" not in err
    assert not (out / "report.json").exists()


def test_negative_finetune_epochs_exits_2(tmp_path):
    assert run_cli("--model", "digits-mlp", "--sparsity", 0.5, "--finetune-epochs", -1, "--no-latency",
                   "--out", tmp_path / "o") == 2


@pytest.mark.parametrize("argv", [["--iterative-steps", "2"], ["--schedule", "agp"]], ids=["iterative", "agp"])
def test_iterative_and_agp_start_from_the_start_plans_weights(tmp_path, monkeypatch, argv):
    """finetune(module, ..., target, start, ...) must get a module whose weights reflect ``start``."""
    seen = {}

    def spy(module, dataset, layer_names, target, start, *a, **kw):
        seen["module_sparsity"] = ft.sparsity_of(module, layer_names)
        seen["start_zeros"] = all(lp.is_dense for lp in start.layers.values())
        raise Cancelled()          # the call is what matters: skip the training
    monkeypatch.setattr(ft, "finetune", spy)
    rc = run_cli("--model", "digits-mlp", "--sparsity", 0.5, "--finetune-epochs", 1, *argv, "--no-latency",
                 "--out", tmp_path / "o")
    assert rc == 130 and seen["start_zeros"]
    assert seen["module_sparsity"] == 0.0


# ---------------------------------------------------------------------------- JobRunner

@pytest.fixture
def runner(qtbot):
    from explorer.gui.window.jobs import JobRunner

    r = JobRunner()
    yield r
    r.cancel()
    assert r.wait(10_000)
    qtbot.waitUntil(lambda: not r.busy, timeout=10_000)


def idle(runner) -> bool:
    return not runner.busy and not runner.queue


def test_jobs_run_one_at_a_time_in_order(qtbot, runner):
    log: list[str] = []
    running = [0]
    peak = [0]
    lock = threading.Lock()
    results: list[tuple[int, bool]] = []
    statuses: list[str] = []
    runner.job_finished.connect(lambda job, status: statuses.append(f"{job.title}:{status}"))

    def make(i):
        def fn(progress, token):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            log.append(f"start {i}")
            time.sleep(0.03)
            log.append(f"end {i}")
            with lock:
                running[0] -= 1
            return i * 10
        return fn
    for i in range(3):
        runner.run(f"job{i}", make(i),
                   on_done=lambda r: results.append((r, threading.current_thread() is threading.main_thread())))
    assert runner.busy
    qtbot.waitUntil(lambda: len(results) == 3, timeout=20_000)
    assert log == ["start 0", "end 0", "start 1", "end 1", "start 2", "end 2"]
    assert peak[0] == 1
    assert results == [(0, True), (10, True), (20, True)]      # in order, delivered on the main thread
    qtbot.waitUntil(lambda: idle(runner), timeout=5_000)
    assert statuses == ["job0:done", "job1:done", "job2:done"]


def test_progress_with_data_always_reaches_on_progress(qtbot, runner):
    got: list[Progress] = []
    done = []

    def fn(progress, token):
        for i in range(300):
            progress(Progress(i / 300, "busy"))
            if i % 100 == 0:
                progress(Progress(i / 300, "point", data=i))
        progress(Progress(1.0, "finished"))
        return "ok"
    threads = set()

    def on_progress(p):
        threads.add(threading.current_thread() is threading.main_thread())
        got.append(p)
    runner.run("progress", fn, on_progress=on_progress, on_done=done.append)
    qtbot.waitUntil(lambda: done == ["ok"], timeout=10_000)
    qtbot.wait(20)
    assert [p.data for p in got if p.data is not None] == [0, 100, 200]
    assert got[-1].fraction == 1.0 and got[-1].message == "finished"
    assert threads == {True}                      # delivered on the main thread


def test_errors_go_to_on_error_or_the_error_signal(qtbot, runner):
    caught: list[Exception] = []
    signalled: list[tuple[str, str, str]] = []
    runner.error.connect(lambda *a: signalled.append(a))
    after = []

    def boom(progress, token):
        raise ValueError("bad value")

    def user_error(progress, token):
        raise ExplorerError("The file is broken.", "Pick another one.")

    def quiet_user_error(progress, token):
        raise ExplorerError("quiet problem")

    runner.run("with handler", boom, on_error=caught.append, on_done=lambda r: after.append("wrong"))
    runner.run("user error", user_error)
    runner.run("bug", boom)
    runner.run("quiet", quiet_user_error, quiet=True)
    runner.run("still alive", lambda p, t: "alive", on_done=after.append)
    qtbot.waitUntil(lambda: after == ["alive"], timeout=20_000)
    assert len(caught) == 1 and isinstance(caught[0], ValueError) and str(caught[0]) == "bad value"
    assert len(signalled) == 2, signalled           # the handled one and the quiet user error pop nothing
    title, message, details = signalled[0]
    assert "The file is broken" in message and "Pick another one" in message and details == ""
    title, message, details = signalled[1]
    assert "bug" in title and "ValueError: bad value" in message and "Traceback" in details


def test_a_failing_completion_handler_does_not_stop_the_queue(qtbot, runner):
    signalled = []
    runner.error.connect(lambda *a: signalled.append(a))
    after = []

    def bad_handler(result):
        raise RuntimeError("handler bug")
    runner.run("first", lambda p, t: 1, on_done=bad_handler)
    runner.run("second", lambda p, t: 2, on_done=after.append)
    qtbot.waitUntil(lambda: after == [2], timeout=10_000)
    assert len(signalled) == 1 and "handler bug" in signalled[0][1]


def test_cancel_stops_a_cooperative_job_and_drops_queued_ones(qtbot, runner):
    started = threading.Event()
    iterations = [0]
    events: list[str] = []
    statuses: list[str] = []
    runner.job_finished.connect(lambda job, status: statuses.append(f"{job.title}:{status}"))

    def loop(progress, token):
        started.set()
        for _ in range(2000):            # ~20 s at most, so a broken cancel fails instead of hanging
            token.check()
            iterations[0] += 1
            time.sleep(0.01)
        return "ran to the end"

    queued_ran = []
    runner.run("loop", loop, on_done=lambda r: events.append("done"), on_cancel=lambda: events.append("cancelled"),
               on_error=lambda e: events.append(f"error {e!r}"))
    runner.run("queued", lambda p, t: queued_ran.append(1), on_done=lambda r: events.append("queued done"),
               on_cancel=lambda: events.append("queued cancelled"))
    qtbot.waitUntil(started.is_set, timeout=10_000)
    runner.cancel()
    qtbot.waitUntil(lambda: "cancelled" in events, timeout=10_000)
    qtbot.waitUntil(lambda: idle(runner), timeout=5_000)
    assert sorted(events) == ["cancelled", "queued cancelled"]
    assert queued_ran == []
    assert iterations[0] < 2000
    assert statuses == ["loop:cancelled"]
    # the runner takes new work afterwards
    after = []
    runner.run("next", lambda p, t: "next", on_done=after.append)
    qtbot.waitUntil(lambda: after == ["next"], timeout=10_000)


def test_job_started_from_on_done_runs(qtbot, runner):
    """Regression: a job submitted from another job's completion handler must not be lost."""
    order: list[str] = []

    def second_done(result):
        order.append(result)
        runner.run("third", lambda p, t: "third", on_done=order.append)

    def first_done(result):
        order.append(result)
        runner.run("second", lambda p, t: "second", on_done=second_done)
    runner.run("first", lambda p, t: "first", on_done=first_done)
    qtbot.waitUntil(lambda: order == ["first", "second", "third"], timeout=15_000)
    qtbot.waitUntil(lambda: idle(runner), timeout=5_000)
    qtbot.wait(50)
    assert order == ["first", "second", "third"]


def test_busy_changed_reports_start_and_end(qtbot, runner):
    states: list[bool] = []
    runner.busy_changed.connect(states.append)
    done = []
    runner.run("a", lambda p, t: 1, on_done=done.append)
    qtbot.waitUntil(lambda: done == [1] and idle(runner), timeout=10_000)
    qtbot.waitUntil(lambda: bool(states) and states[-1] is False, timeout=5_000)
    assert states[0] is True and states[-1] is False


def test_a_job_that_cannot_be_cancelled_finishes(qtbot, runner):
    started = threading.Event()
    release = threading.Event()
    events = []

    def fn(progress, token):
        started.set()
        release.wait(10)
        token.check()          # would raise if the runner had cancelled it
        return "finished"
    runner.run("chore", fn, cancellable=False, on_done=events.append, on_cancel=lambda: events.append("cancelled"))
    qtbot.waitUntil(started.is_set, timeout=10_000)
    runner.cancel()
    release.set()
    qtbot.waitUntil(lambda: bool(events) and idle(runner), timeout=10_000)
    assert events == ["finished"]
