"""Keras private internals this package leans on: fail loudly, naming them, if an upgrade removes one.

``train.SafeBackupAndRestore`` (atomic, NaN-free resume points) extends private
state and methods of ``keras.callbacks.BackupAndRestore``, and
``distribute.fit_workarounds`` replaces ``Model._maybe_symbolic_build``. No public
API does either job in the tested Keras range (``keras>=3.5,<3.16`` in
pyproject.toml); these tests tell whoever widens that range what to port.
"""

import inspect
import re

import keras

from koala_utils import distribute, train


def _private_names(cls_or_function, owner="self"):
    return sorted(set(re.findall(rf"\b{owner}\.(_[A-Za-z]\w*)", inspect.getsource(cls_or_function))))


def test_backup_and_restore_internals_exist(tmp_path):
    used = _private_names(train.SafeBackupAndRestore)
    assert used, "SafeBackupAndRestore no longer touches Keras internals: drop this test and the keras<3.16 cap"
    stock = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    missing = [name for name in used if not hasattr(stock, name)]
    assert not missing, (
        f"keras {keras.__version__}: BackupAndRestore has no {', '.join(missing)}, which "
        "koala_utils.train.SafeBackupAndRestore reads or overrides; port it before widening the keras pin"
    )
    assert isinstance(stock._weights_path, str) and stock._weights_path.endswith(".weights.h5")
    assert callable(stock._save_model) and inspect.signature(stock._save_model).parameters == {}


def test_backup_and_restore_saves_through_save_model():
    # SafeBackupAndRestore makes saving atomic by overriding _save_model: Keras must still save through it.
    source = inspect.getsource(keras.callbacks.BackupAndRestore.on_train_batch_end)
    assert "_save_model" in source, (
        f"keras {keras.__version__}: BackupAndRestore.on_train_batch_end no longer calls _save_model; "
        "koala_utils.train.SafeBackupAndRestore's atomic save would be bypassed"
    )


def test_symbolic_build_hook_exists():
    assert _private_names(distribute.fit_workarounds, "model") == ["_maybe_symbolic_build"]
    hook = getattr(keras.Model, "_maybe_symbolic_build", None)
    assert hook is not None, (
        f"keras {keras.__version__}: Model._maybe_symbolic_build is gone; koala_utils.distribute.fit_workarounds "
        "would silently stop working around keras-team/keras#20329"
    )
    assert {"iterator", "data_batch"} <= set(inspect.signature(hook).parameters), (
        f"keras {keras.__version__}: Model._maybe_symbolic_build(iterator, data_batch) changed its signature"
    )
