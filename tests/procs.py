"""Environments for the tests' subprocesses: CPU host devices, multi-process jobs; and the
scripts/ files loaded as modules.

Each keeps the suite's own ``XLA_FLAGS`` (see conftest.py) and adds the device count, so a
subprocess compiles exactly as the test process does and bitwise comparisons between them hold.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    """``scripts/NAME.py`` as a module (its ``main`` is not run)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu_env(devices: int, **extra: str) -> dict[str, str]:
    """This process's environment, on CPU with ``devices`` host devices, plus ``extra``."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags.strip(), **extra}


def job_envs(processes: int = 2, devices: int = 2) -> list[dict[str, str]]:
    """One environment per process of a local multi-process job (``climit.parallel``'s
    variables, a free coordinator port), each process with ``devices`` CPU devices."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return [cpu_env(devices, CLIMIT_COORDINATOR=f"127.0.0.1:{port}",
                    CLIMIT_NUM_PROCESSES=str(processes), CLIMIT_PROCESS_ID=str(pid))
            for pid in range(processes)]


def run_job(argv: list[str], timeout: float, processes: int = 2,
            devices: int = 2) -> list[tuple[int, str]]:
    """Run ``argv`` as every process of one local job: [(exit code, stdout + stderr)] by process.
    Processes still running at ``timeout`` are killed (and the expiry raised)."""
    workers = [subprocess.Popen(argv, env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT) for env in job_envs(processes, devices)]
    try:
        outs = [p.communicate(timeout=timeout)[0] for p in workers]
    finally:
        for p in workers:
            p.kill()
    return [(p.returncode, out) for p, out in zip(workers, outs)]
