"""The finiteness test the localisation runs on every module output of its steps: exact for
NaN and both infinities in every floating dtype, without a boolean temporary."""

import pytest
import torch

from rnndoctor.probes.data import data_steps
from rnndoctor.probes.nonfinite import all_finite


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_all_finite_sees_every_kind_of_non_finite(dtype, bad):
    x = torch.randn(7, 5).to(dtype)
    assert bool(all_finite(x))
    x[3, 2] = bad
    assert not bool(all_finite(x))


def test_all_finite_on_empty_and_complex():
    assert bool(all_finite(torch.zeros(0, 4)))
    z = torch.randn(3, dtype=torch.complex64)
    assert bool(all_finite(z))
    z[1] = complex(float("nan"), 0)
    assert not bool(all_finite(z))


def test_data_steps_reads_nan_steps_as_data_and_the_pad_vector_as_padding():
    seq = torch.randn(4, 6, 3)
    pad = torch.tensor([0.5, -1.0, 2.0])
    seq[:2, 4:] = pad  # two sequences end with the shared pad vector
    seq[2, 5] = 0.0  # one all-zero step
    seq[3, 1, 0] = float("nan")
    steps = data_steps(seq)
    assert steps[:2, 4:].sum() == 0 and steps[:2, :4].all()
    assert not steps[2, 5] and steps[3, 1]
