"""Workflow 3: a fit killed mid-epoch (SIGKILL, no cleanup) and restarted
with `keras.callbacks.BackupAndRestore` ends at the same weights as a fit that
never stopped (bitwise: same backend, same steps, same order).

Keras restarts the interrupted epoch from the last epoch-end backup (its
mid-epoch `save_freq` would restart the epoch with mid-epoch weights, which
no uninterrupted run matches), so the backup is taken per epoch.
"""

import keras
import numpy as np

from conftest import BACKEND
from conftest import BATCH
from conftest import HERE
from conftest import embedding_model
from conftest import make_data
from conftest import optimizer_state
from conftest import run_python
from keras_lazyadam import LazyAdam

EPOCHS, STEPS = 3, 6
KILL_AT = (1, 3)  # (epoch, batch): in the middle of the second epoch

SCRIPT = """
import os, signal, sys
sys.path.insert(0, {here!r})
import keras
from conftest import BATCH, embedding_model, make_data
from keras_lazyadam import LazyAdam

class Kill(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == {kill_at!r}:
            os.kill(os.getpid(), signal.SIGKILL)

x, y = make_data({steps} * BATCH)
model = embedding_model()
model.compile(optimizer=LazyAdam(0.02), loss="mse")
backup = keras.callbacks.BackupAndRestore({backup!r}, save_freq="epoch")
model.fit(x, y, batch_size=BATCH, epochs={epochs}, shuffle=False, verbose=0,
          callbacks=[backup, Kill()])
print("{{}}")
"""


def _fit(model, callbacks=()):
    x, y = make_data(STEPS * BATCH)
    return model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=EPOCHS,
        shuffle=False,
        verbose=0,
        callbacks=list(callbacks),
    )


def test_killed_fit_resumes_to_the_uninterrupted_weights(tmp_path):
    backup = tmp_path / "backup"
    code = SCRIPT.format(here=HERE, kill_at=KILL_AT, steps=STEPS, backup=str(backup), epochs=EPOCHS)
    proc = run_python(code, BACKEND, cwd=tmp_path, check=False)
    assert proc.returncode == -9, proc.stderr[-3000:]  # really killed
    assert backup.exists() and any(backup.iterdir())

    straight = embedding_model()
    straight.compile(optimizer=LazyAdam(0.02), loss="mse")
    _fit(straight)

    # Restarted from scratch, with different initial weights: the backup
    # (weights and LazyAdam's state) must replace them.
    resumed = embedding_model(seed=7)
    resumed.compile(optimizer=LazyAdam(0.02), loss="mse")
    history = _fit(resumed, [keras.callbacks.BackupAndRestore(str(backup), save_freq="epoch")])
    assert history.epoch == [1, 2]  # resumed in the killed epoch, not before
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(optimizer_state(resumed.optimizer), optimizer_state(straight.optimizer)):
        np.testing.assert_array_equal(a, b)
    assert not backup.exists()  # deleted once training finished
