"""One GPU per sweep job on a multi-GPU machine: each job claims a free GPU with a lock file.

With a parallel local launcher (``hydra/launcher=joblib hydra.launcher.n_jobs=<GPUs>``) several
jobs start at once; each takes the first GPU whose ``<lock_dir>/gpu-<i>.lock`` it can lock
exclusively and holds it until the job ends (the operating system releases the lock even when
the job is killed), so no two running jobs share a GPU.
"""

from __future__ import annotations

import fcntl
import logging
import time
from pathlib import Path
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

@contextmanager
def claimed_gpu(lock_dir: Path, n_gpus: int, poll_s: float = 5.0) -> Iterator[int]:
    """Hold a GPU no other job holds (waiting while all ``n_gpus`` are taken); yields its index.

    The claim ends with the ``with`` block, or with the process.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for index in range(n_gpus):
            handle = open(lock_dir / f"gpu-{index}.lock", "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                handle.close()
                if isinstance(error, BlockingIOError):
                    continue
                raise
            log.info("this job runs on GPU %d (lock %s)", index, handle.name)
            with handle:  # closing the file releases the lock
                yield index
            return
        if not waited:
            log.info("all %d GPUs are taken by other jobs of the sweep; waiting", n_gpus)
            waited = True
        time.sleep(poll_s)
