"""FloorWarning: one warning when training Dice sits at 0 for N epochs in a row, resumes too."""
from oct_seg.training.callbacks import FloorWarning


def _feed(callback, dices, start=0):
    for epoch, dice in enumerate(dices, start):
        callback.on_epoch_end(epoch, {"dice": dice, "loss": 1.0})


def _warnings(capsys):
    return capsys.readouterr().out.count("WARNING fold_2: training Dice 0.000 for 4 epochs")


def test_warns_once_after_n_zero_epochs(capsys):
    cb = FloorWarning("fold_2", epochs=4)
    _feed(cb, [0.0, 0.0, 0.0])
    assert _warnings(capsys) == 0
    _feed(cb, [0.0], start=3)
    assert _warnings(capsys) == 1
    _feed(cb, [0.0, 0.0], start=4)
    assert _warnings(capsys) == 0


def test_a_learning_epoch_resets_the_count(capsys):
    cb = FloorWarning("fold_2", epochs=4)
    _feed(cb, [0.0, 0.0, 0.0, 0.01, 0.0, 0.0, 0.0])
    assert _warnings(capsys) == 0
    _feed(cb, [0.0], start=7)
    assert _warnings(capsys) == 1


def test_resumed_history_continues_the_count(capsys):
    rows = [{"epoch": e, "dice": 0.0} for e in range(3)]
    cb = FloorWarning("fold_2", rows=rows, epochs=4)
    _feed(cb, [0.0], start=3)
    assert _warnings(capsys) == 1
    # a run that already warned before the resume does not warn again
    again = FloorWarning("fold_2", rows=[*rows, {"epoch": 3, "dice": 0.0}], epochs=4)
    _feed(again, [0.0, 0.0], start=4)
    assert _warnings(capsys) == 0
