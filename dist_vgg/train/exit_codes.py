"""Exit codes of `dist-vgg train`: the SLURM scripts and the tests branch on them, so they live in one place.

| code | name | meaning |
|---|---|---|
| 0 | OK | training finished (final checkpoint written) |
| 1 | ERROR | bad configuration or a crash; nothing more was saved |
| 3 | NONFINITE_LOSS | the loss became NaN/inf; the last good checkpoint was left untouched |
| 4 | STOPPED | SIGTERM (scancel, time limit, preemption) or the requeue cap: saved, do not requeue |
| 75 | REQUEUE | SIGUSR1 (sent before the time limit): saved, please requeue (`scontrol requeue`) |
"""

OK = 0
ERROR = 1
NONFINITE_LOSS = 3
STOPPED = 4
REQUEUE = 75

NAMES = {OK: "OK", ERROR: "ERROR", NONFINITE_LOSS: "NONFINITE_LOSS", STOPPED: "STOPPED", REQUEUE: "REQUEUE"}
