"""``accelerate launch --num_processes 2 --cpu -m instacli train``: two gloo processes train like one,
on one machine or on two.

Two processes of batch 8 see the same 16 rows per optimizer step as one process of batch 16, so
step counts and the learning-rate schedule must match exactly, and losses up to noise (each
process augments its own half differently). Only the main process writes: the run folder holds
one copy of everything and nothing else appears in the working directory.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instacli.model import load_run
from instacli.settings import TrainSettings
from instacli.training import train
from tests.conftest import TINY_VIT

EPOCHS = 8

pytestmark = pytest.mark.skipif(shutil.which("accelerate") is None, reason="needs the accelerate launcher")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 + 30 photos a tiny model separates (blue-over-green bands vs a brown blob on grey)."""
    from instacli_datasets import build_dataset

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for category in ("animal", "landscape"):
        (root / category).mkdir()
        for i in range(30):
            if category == "landscape":
                img = np.zeros((40, 48, 3), np.uint8)
                img[:20], img[20:] = (90, 150, 230), (60, 160, 70)
            else:
                img = np.full((40, 48, 3), 128, np.uint8)
                img[10:30, 14:34] = (120, 70, 30)
            img = np.clip(img + rng.integers(-25, 25, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / category / f"{category}_{i:02d}.png")
    out = tmp_path_factory.mktemp("data") / "ds"
    build_dataset(root, out, synthetic="seed", seed=1, val_fraction=0.2, test_fraction=0.2)
    return out


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One decode cache for the module: the launched processes find the photos decoded by the first training."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def single(dataset: Path, cache: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The metrics of one process of batch 16: what every launch below must reproduce."""
    run = tmp_path_factory.mktemp("single") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INSTACLI_CACHE", str(cache))
        train(TrainSettings(data=dataset, out=run, encoder_options=TINY_VIT, epochs=EPOCHS, batch_size=16, lr=3e-3, warmup_epochs=1))
    return _records(run)


def _launch(dataset: Path, cache: Path, *launcher: str) -> list[str]:
    """``accelerate launch --cpu LAUNCHER... -m instacli train`` of the tiny model, 8 rows per process and step."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", *launcher,
        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "instacli", "train", "--data", str(dataset), "--out", "run",
        "--epochs", str(EPOCHS), "--batch-size", "8", "--lr", "3e-3", "--checkpoint-every", "1", "--quiet",
        *[arg for key, value in TINY_VIT.items() for arg in ("-E", f"{key}={value}")],
    ]


def _env(cache: Path) -> dict[str, str]:
    env = {**os.environ, "INSTACLI_CACHE": str(cache), "INSTACLI_WARMUP_EPOCHS": "1", "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_CONFIG_FILE", None)
    return env


def _assert_trains_like_one(run: Path, one: list[dict]) -> None:
    """Two processes of batch 8 trained like one of batch 16: same steps and schedule, losses up to noise."""
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "curves.png", "metrics.jsonl", "model.safetensors", "settings.json"]
    two = _records(run)
    assert [r["epoch"] for r in two] == list(range(1, EPOCHS + 1))  # one line per epoch: a single writer
    assert [r["optimizer_steps"] for r in two] == [r["optimizer_steps"] for r in one] == [3 * e for e in range(1, EPOCHS + 1)]  # 36 rows: 16 + 16 + 4
    assert [r["lr"] for r in two] == pytest.approx([r["lr"] for r in one], rel=1e-6)
    # same data, same schedule, different augmentation draws: the curves agree up to noise
    assert two[-1]["val_accuracy"] >= 0.8 and one[-1]["val_accuracy"] >= 0.8
    assert two[-1]["val_accuracy"] * 12 == pytest.approx(round(two[-1]["val_accuracy"] * 12))  # 12 rows, no padding duplicates
    for key in ("val_loss", "train_loss"):  # mean of the last 3 epochs; seen: 0.05-0.1 apart
        assert abs(np.mean([r[key] for r in two[-3:]]) - np.mean([r[key] for r in one[-3:]])) < 0.3, key
    load_run(run)


def test_two_processes_match_one(dataset: Path, cache: Path, single: list[dict], tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    command = _launch(dataset, cache, "--num_processes", "2", "--num_machines", "1")
    result = subprocess.run(command, cwd=cwd, env=_env(cache), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in cwd.iterdir()) == ["run"]  # nothing else written by either process
    _assert_trains_like_one(cwd / "run", single)


def test_two_machines_of_one_process_match_one(dataset: Path, cache: Path, single: list[dict], tmp_path: Path) -> None:
    """``accelerate launch --cpu --num_machines 2 --machine_rank 0|1 ...`` on two "machines" (two launchers on
    localhost, each in its own folder): one training of 2 processes, written by machine 0. Before, each
    launcher started its own single-machine world on the same port, and then machine 1 read the best
    weights from its own folder, where machine 0 had not written them."""
    port = _free_port()
    launchers, folders = [], []
    for rank in (0, 1):
        folders.append(tmp_path / f"machine{rank}")
        folders[-1].mkdir()
        command = _launch(dataset, cache, "--num_processes", "2", "--num_machines", "2", "--machine_rank", str(rank),
                          "--main_process_ip", "127.0.0.1", "--main_process_port", str(port))
        launchers.append(subprocess.Popen(command, cwd=folders[-1], env=_env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for launcher in launchers:
        _, stderr = launcher.communicate(timeout=600)
        assert launcher.returncode == 0, stderr[-3000:]
    assert sorted(p.name for p in folders[0].iterdir()) == ["run"]
    # machine 1 writes only its process's share of a checkpoint (accelerate's RNG state; resuming needs --out on shared storage)
    assert [p.relative_to(folders[1]).as_posix() for p in folders[1].rglob("*") if p.is_file()] == ["run/checkpoint.tmp/random_states_1.pkl"]
    _assert_trains_like_one(folders[0] / "run", single)


def _free_port() -> int:
    """A free port of 127.0.0.1 for the processes of a launch to meet on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_cpu_launcher_size_is_read_from_the_launcher_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``accelerate launch --cpu`` starts one process; the N it was asked for comes from the launcher's argv."""
    from instacli.errors import InstacliError
    from instacli.launch import CpuLaunch, requested_cpu_processes

    for key in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "ACCELERATE_USE_CPU", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"\0".join([b"python", b"accelerate", b"launch", b"--cpu", b"--num_processes", b"3", b"-m", b"instacli", b"train"]))
    assert requested_cpu_processes(cmdline) is None  # not under accelerate's CPU launcher: nothing to do
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert requested_cpu_processes(cmdline) == CpuLaunch(3)
    cmdline.write_bytes(b"\0".join([b"accelerate", b"launch", b"--num-processes=2", b"--cpu", b"train.py"]))
    assert requested_cpu_processes(cmdline) == CpuLaunch(2)
    cmdline.write_bytes(b"\0".join([b"accelerate", b"launch", b"--num_machines", b"2", b"--machine-rank=1", b"--num_processes", b"4", b"--cpu"]))
    assert requested_cpu_processes(cmdline) == CpuLaunch(4, machines=2, machine_rank=1)  # 2 here, 2 on machine 0
    cmdline.write_bytes(b"\0".join([b"accelerate", b"launch", b"--num_machines", b"2", b"--num_processes", b"3", b"--cpu"]))
    with pytest.raises(InstacliError, match="multiple of --num_machines 2"):
        requested_cpu_processes(cmdline)
    monkeypatch.setenv("WORLD_SIZE", "2")  # already one of N processes (torchrun): never relaunch
    assert requested_cpu_processes(cmdline) is None
    monkeypatch.delenv("WORLD_SIZE")
    cmdline.write_bytes(b"\0".join([b"accelerate", b"launch", b"--cpu", b"train.py"]))  # N from a config file
    with pytest.raises(InstacliError, match="--multi_gpu"):
        requested_cpu_processes(cmdline)


def test_one_process_out_of_time_stops_both_together(dataset: Path, tmp_path: Path) -> None:
    """Each process reads its own clock for ``--time-budget``: here process 1's runs 10⁵ times fast, so it is
    out of time after the first epoch while process 0 is not. Both must stop after that epoch (a process
    that went on alone would wait forever in the next collective call; the launch times out instead)."""
    fast_clock = tmp_path / "fast_clock.py"
    fast_clock.write_text(
        "import os, sys, time\n"
        "if os.environ.get('RANK') == '1':\n"
        "    real = time.perf_counter\n"
        "    time.perf_counter = lambda: real() * 1e5\n"
        "sys.argv = ['instacli', *sys.argv[1:]]\n"
        "from instacli.cli.main import main\n"
        "main()\n"
    )
    env = {**os.environ, "INSTACLI_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_CONFIG_FILE", None)
    port = _free_port()
    command = [  # torchrun itself: `accelerate launch --cpu` would restart instacli without the fast clock
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(port), str(fast_clock), "train", "--data", str(dataset),
        "--out", str(tmp_path / "run"), "--epochs", "4", "--batch-size", "8", "--time-budget", "600", "--quiet",
        *[arg for key, value in TINY_VIT.items() for arg in ("-E", f"{key}={value}")],
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["epoch"] for r in _records(tmp_path / "run")] == [1]
