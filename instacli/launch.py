"""How this process was started: one process, or one of several joined over gloo on a machine without a GPU.

``accelerate launch --multi_gpu`` and ``torchrun`` start N processes themselves. ``accelerate launch
--cpu --num_processes N`` does not: without ``--mpirun_hostfile`` its launcher starts one plain process
and only sets ``MASTER_PORT``. Rather than let that process train alone, the train command starts the N
processes itself through ``torch.distributed.run`` (what ``--multi_gpu`` uses), this machine's share of
them when ``--num_machines`` is given, so the documented command does what it says.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState

from instacli import registry
from instacli.errors import InstacliError

_LAUNCHER_SIZES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_on_cpu() -> bool:
    """Several processes started by torchrun / ``accelerate launch`` on a machine without a GPU."""
    launched = int(os.environ.get("LOCAL_RANK", -1)) != -1 or int(os.environ.get("WORLD_SIZE", 1)) > 1
    gpu = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    return launched and not gpu


def precision_autocast(device: torch.device, precision: str) -> torch.autocast:
    """torch's autocast for one of accelerate's precision names (``no``/``bf16``/``fp16``), for code that
    runs outside an ``Accelerator`` (embedding a split, a distillation teacher, predict)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def resolve_mixed_precision(choice: str, encoder: str | None = None) -> str:
    """``auto`` → bf16 where the hardware runs it fast (CUDA with bf16, or a CPU with AVX512-BF16/AMX), else no.

    On a CPU, an encoder whose recipe says ``cpu_bf16: False`` stays in fp32: oneDNN's bf16
    depthwise convolutions are far slower than fp32 ones (EfficientNet-Lite0 on the 2-core AMX
    machine, torch 2.14: 0.9 vs 12.6 images/s per thread), while matrix products gain ~5×.
    """
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if encoder is not None and not registry.encoders.get(encoder).recipe.get("cpu_bf16", True):
        return "no"
    cpu = torch.cpu
    fast_bf16 = getattr(cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    return "bf16" if fast_bf16 else "no"


def process_state() -> PartialState:
    """This process's place in a launch; without a GPU, several processes join over gloo (accelerate's MULTI_CPU)."""
    return PartialState(cpu=launched_on_cpu())


def _int_flag(argv: list[str], name: str) -> int | None:
    """The value of the launcher flag ``--name`` (or its ``--name-with-dashes`` spelling) in a command line, if any."""
    spellings = (f"--{name}", f"--{name.replace('_', '-')}")
    for i, arg in enumerate(argv):
        flag, sep, value = arg.partition("=")
        if flag in spellings:
            value = value if sep else (argv[i + 1] if i + 1 < len(argv) else "")
            return int(value) if value.isdigit() else None
    return None


@dataclass(frozen=True)
class CpuLaunch:
    """What ``accelerate launch --cpu`` was asked for: ``processes`` in all, over ``machines`` machines, this one being ``machine_rank``."""

    processes: int
    machines: int = 1
    machine_rank: int = 0


def requested_cpu_processes(parent_cmdline: Path | None = None) -> CpuLaunch | None:
    """The launch asked of this lone process of ``accelerate launch --cpu --num_processes N
    [--num_machines M --machine_rank R]`` (N > 1), else None.

    The launcher puts N, M and R on its own command line only, so they are read from the parent process.
    """
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true", "yes") or "MASTER_PORT" not in os.environ:
        return None
    if any(key in os.environ for key in _LAUNCHER_SIZES):
        return None  # a real multi-process launch (torchrun, mpirun)
    path = parent_cmdline or Path(f"/proc/{os.getppid()}/cmdline")
    try:
        argv = path.read_bytes().decode(errors="replace").split("\0")
    except OSError:
        argv = []
    n = _int_flag(argv, "num_processes")
    if n is None:
        raise InstacliError(
            "accelerate launch --cpu started a single process and its --num_processes could not be read; "
            "use `accelerate launch --multi_gpu --num_processes N -m instacli train ...` (gloo on CPU) or `torchrun --nproc_per_node N -m instacli train ...`"
        )
    machines, rank = _int_flag(argv, "num_machines") or 1, _int_flag(argv, "machine_rank") or 0
    if n % machines:
        raise InstacliError(f"accelerate launch: --num_processes {n} is the total over all machines; make it a multiple of --num_machines {machines}")
    return CpuLaunch(n, machines, rank) if n > 1 else None


def relaunch_cpu_processes() -> None:
    """Replace this lone process with this machine's share of the processes ``accelerate launch --cpu`` asked for."""
    launch = requested_cpu_processes()
    if launch is None:
        return
    os.execv(sys.executable, [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", str(launch.machines), "--node_rank", str(launch.machine_rank),
        "--nproc_per_node", str(launch.processes // launch.machines),
        "--master_addr", os.environ.get("MASTER_ADDR", "127.0.0.1"), "--master_port", os.environ["MASTER_PORT"],
        "-m", "instacli", *sys.argv[1:],
    ])
