"""The pickle reader builds inert data and never runs what a pickle says (a project file is untrusted)."""

import os
import pickle

import numpy as np
import pytest

from hpc_ilastik.errors import UserError
from hpc_ilastik.io.pickles import Call, Global, numpy_array, read_pickle


class _CreatesAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_reads_back_at_every_protocol(protocol):
    value = ({"file path": "{dataset_dir}/t.csv", "file type": "csv", "compression": {}, "margin": 3,
              "include raw": False, "ratio": 2.5, "big": 2 ** 70, "nothing": None, "nested": [(1, "a"), [2.0]]},
             ["Mean", "Count"])
    assert read_pickle(pickle.dumps(value, protocol=protocol), "settings") == value


def test_what_ilastik_stores_reads_as_inert_values():
    assert read_pickle(b"(NNtp1\n.", "settings") == (None, None)
    factory = read_pickle(b"ccopy_reg\n_reconstructor\np0\n(clazyflow.classifiers.parallelVigraRfLazyflowClassifier\n"
                          b"ParallelVigraRfLazyflowClassifierFactory\np1\nc__builtin__\nobject\np2\nNtp3\nRp4\n(dp5\n"
                          b"VVERSION\np6\nI2\nsV_num_trees\np7\nI100\nsb.", "factory")
    assert factory.function == Global("copy_reg", "_reconstructor")
    assert factory.args[0] == Global("lazyflow.classifiers.parallelVigraRfLazyflowClassifier",
                                     "ParallelVigraRfLazyflowClassifierFactory")
    assert factory.state == {"VERSION": 2, "_num_trees": 100}


def test_a_numpy_array_stays_bytes_and_a_description():
    array = read_pickle(pickle.dumps(np.arange(6, dtype=np.float32).reshape(2, 3), protocol=3), "array")
    assert isinstance(array, Call) and array.function.name == "_reconstruct"
    version, shape, dtype, fortran, data = array.state
    assert shape == (2, 3) and dtype.args[0] == "f4" and not fortran
    assert np.array_equal(np.frombuffer(data, np.float32).reshape(shape), np.arange(6).reshape(2, 3))


def test_a_planted_pickle_never_runs(tmp_path):
    target = tmp_path / "created-by-the-pickle"
    for protocol in (0, 2, 5):
        value = read_pickle(pickle.dumps(_CreatesAFile(str(target)), protocol=protocol), "planted")
        assert isinstance(value, Call) and value.function.name == "open" and value.args[0] == str(target)
    assert not target.exists()
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("data, why", [
    (b"(NNtp1\n", "STOP"),
    (b"\x80\x03X\x03\x00\x00", "not a readable pickle"),
    (b"P1\n.", "not a readable pickle"),     # a persistent id: refused
    (b"N\x82\x01.", "not a readable pickle"),  # an extension code: refused
])
def test_damaged_or_forbidden_pickles_are_one_clear_error(data, why):
    with pytest.raises(UserError, match=why):
        read_pickle(data, "the stored value")


@pytest.mark.parametrize("array", [
    np.arange(6, dtype=">f4").reshape(2, 3),
    np.asfortranarray(np.arange(12, dtype=np.int64).reshape(3, 4)),
    np.zeros((0, 3)),
    np.array([(1, 2.5, 1)], dtype=[("left_child", "<i8"), ("threshold", "<f8"), ("missing_go_to_left", "u1")]),
    np.array(True),
])
def test_numpy_arrays_are_rebuilt_from_their_bytes(array):
    rebuilt = numpy_array(read_pickle(pickle.dumps(array, protocol=3), "array"), "array")
    assert rebuilt.dtype == array.dtype and rebuilt.shape == array.shape and np.array_equal(rebuilt, array)


@pytest.mark.parametrize("value, why", [
    (np.array([1, "a"], dtype=object), "without its raw bytes"),
    ([1, 2], "not a numpy array"),
])
def test_what_is_no_plain_numpy_array_is_refused(value, why):
    with pytest.raises(ValueError, match=why):
        numpy_array(read_pickle(pickle.dumps(value, protocol=3), "value"), "value")
