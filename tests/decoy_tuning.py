"""A tuning test plug-in and its worker launcher, shared by the journal-file and PostgreSQL tuning tests."""
from __future__ import annotations

import os
import subprocess
import textwrap

# A decoy hyper-parameter: training ignores it, so every trial reaches the same Dice and the median
# pruner never prunes; every finished trial is then COMPLETE.  A worker's first trial waits until every
# worker has started one (files in TUNABLE_BARRIER), so the workers overlap whatever their start-up time;
# TUNABLE_TRIAL_SECONDS then slows each trial of one worker.
PARALLEL_PLUGIN = textwrap.dedent(
    """
    import os
    import time
    from dataclasses import dataclass
    from bench import Method, StepOutput, ce_dice_loss, register_method, unet_for

    @dataclass
    class DecoyParams:
        \"\"\"A hyper-parameter training does not read (tests the tuning machinery only).\"\"\"
        decoy: float = 1.0

    @register_method()
    class Decoy(Method):
        name = "decoy"
        paper = "test plug-in"
        Params = DecoyParams

        def __init__(self, params, task):
            super().__init__(params, task)
            self.network = unet_for(task)
            barrier = os.environ["TUNABLE_BARRIER"]
            open(os.path.join(barrier, str(os.getpid())), "w").close()
            deadline = time.time() + 60
            while len(os.listdir(barrier)) < int(os.environ["TUNABLE_WORKERS"]) and time.time() < deadline:
                time.sleep(0.05)
            time.sleep(float(os.environ["TUNABLE_TRIAL_SECONDS"]))

        def training_step(self, batch, progress):
            return StepOutput(ce_dice_loss(self.network(batch.labeled_images), batch.labels))

        @classmethod
        def search_space(cls, trial):
            return {"decoy": trial.suggest_float("decoy", 0.5, 2.0)}
    """
)

def start_workers(tmp_path, commands, trial_seconds):
    """One ``bench tune`` process per entry of ``trial_seconds`` (extra seconds each of its trials takes);
    ``commands`` is one command for all, or one per worker.  The workers share one barrier."""
    if commands and isinstance(commands[0], str):
        commands = [commands] * len(trial_seconds)
    (tmp_path / "decoy_plugin.py").write_text(PARALLEL_PLUGIN)
    barrier = tmp_path / f"barrier-{len(list(tmp_path.glob('barrier-*')))}"
    barrier.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", TUNABLE_BARRIER=str(barrier), TUNABLE_WORKERS=str(len(trial_seconds)),
               PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return [subprocess.Popen(command, env={**env, "TUNABLE_TRIAL_SECONDS": str(seconds)}, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for command, seconds in zip(commands, trial_seconds)]
