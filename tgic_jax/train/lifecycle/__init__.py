"""A run's life, from start-up to its last line: what starts it, what stops it, how it fails.

1. Start checks: the config, the mesh, the model's size and the inputs are checked before
   anything is written (`config_checks`, in the trainer); a failure is a one-line `RunError`
   (`errors`).
2. Start-up signals (`signals`): until the first step, SIGTERM and Ctrl-C end the process at
   once with one line, even while the main thread sits in XLA's compiler: nothing is trained
   yet, so nothing is lost.
3. The lock (`lock`): one run per workdir, an advisory `flock` the kernel releases however the
   run ends; a second run is refused in one line.
4. Stop agreement (`stop`): in the loop, SIGTERM, Ctrl-C and the time budget stop every host
   after the same step, which is saved; a second Ctrl-C quits at once.
5. The non-finite watch (`finite_watch`): a NaN or infinite loss stops the run before anything
   non-finite is saved, naming the last good checkpoint.
6. Failure lines (`errors`): `RunError` and its kinds carry the one line train.py prints
   (`train.py: error: ...`) and the exit status (130 after Ctrl-C); anything else is a bug and
   keeps its traceback.

The package imports nothing heavy at import time (train.py imports `signals` before JAX).
"""
