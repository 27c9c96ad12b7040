"""Training: configuration, resumable callbacks, one fold, whole runs.

    config.py     TrainConfig (every option of a run; config.json round trip)
    callbacks.py  kill-proof backup, history logger, best checkpoint, resumable early stopping
    resume.py     where an interrupted fit continues (ResumeState from the fold folder)
    fold.py       one fold: build + compile, fit or resume, score on clean / noisy scans
    run.py        train / cross_validate / train_final and the run summary

Where each file goes: oct_seg.rundir.
"""
from oct_seg.training.config import TrainConfig
from oct_seg.training.fold import build_and_compile, fit_fold, score_parts
from oct_seg.training.resume import ResumeState, resume_state
from oct_seg.training.run import cross_validate, summarize_run, train, train_final

__all__ = ["TrainConfig", "train", "cross_validate", "train_final", "summarize_run",
           "build_and_compile", "fit_fold", "score_parts", "resume_state", "ResumeState"]
