"""Runs stopped from outside: a SIGTERM (kill, timeout, a scheduler's time limit) that lands in a Lightning loop
stops the command with one line and status 143, as the signal does elsewhere, instead of exiting 0 or going on
(hspace.lightning.terminated); a disk that fills while the outputs are written is one line."""

import os
import signal

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from hspace.lightning.terminated import EXIT_STATUS, Terminated, stopped_by_sigterm


class SignalsItself(pl.LightningModule):
    """A test loop of four batches that sends this process SIGTERM in batch `at`."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.seen = at, []

    def test_step(self, batch, index):
        self.seen.append(index)
        if index == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


def run_test_loop(at: int) -> SignalsItself:
    module = SignalsItself(at)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    with stopped_by_sigterm(trainer, lambda: f"stopped after batch {module.seen[-1]}"):
        trainer.test(module, dataloaders=DataLoader(torch.zeros(4, 1)), verbose=False)
    return module


@pytest.mark.parametrize("at", [1, 3])  # mid-loop: Lightning raises a SystemExit of status 0; last batch: a flag
def test_a_sigterm_in_a_lightning_loop_is_terminated(at):
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(Terminated, match=f"stopped after batch {at}"):
            run_test_loop(at)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert run_test_loop(at=-1).seen == [0, 1, 2, 3]  # no signal: the loop runs to its end


def test_terminated_is_one_line_and_status_143(capsys):
    from hspace.cli import user_errors_exit

    @user_errors_exit
    def task():
        raise Terminated("training stopped by SIGTERM at step 7, not exported: resume ...")

    with pytest.raises(SystemExit) as exited:
        task()
    assert exited.value.code == EXIT_STATUS == 143
    assert capsys.readouterr().err == "error: training stopped by SIGTERM at step 7, not exported: resume ...\n"


def test_a_full_disk_while_writing_the_outputs_is_one_line_and_the_failure_record_is_best_effort(tmp_path, monkeypatch):
    """No space left while the run writes its outputs: one line naming the run directory, as for the cache; and
    recording the failure on that disk, which fails too, does not hide it behind a second traceback."""
    import errno

    import hspace.cli.run
    from hspace.errors import UserError
    from hspace.job import writing

    with pytest.raises(UserError, match=f"cannot write the run's outputs in {tmp_path} \\(No space left on device\\)"):
        with writing(tmp_path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(hspace.run_record, "write_json", full)
    hspace.cli.run.mark_failed(tmp_path, UserError("cannot write the run's outputs"))  # returns: nothing raised


def test_ctrl_c_is_one_line_and_status_130(capsys):
    from hspace.cli import user_errors_exit

    @user_errors_exit
    def task():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exited:
        task()
    assert exited.value.code == 130 and capsys.readouterr().err == "error: interrupted\n"
