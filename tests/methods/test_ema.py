"""The shared EMA teacher piece: a frozen copy, the momentum ramp, and an update that a
skipped step leaves out exactly, decided on the device."""

import pytest
import torch
from torch import nn

from fmtrain.methods import EMAConfig, ema_copy, ema_momentum, ema_update


def test_the_copy_is_frozen_and_independent():
    student = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5))
    teacher = ema_copy(student)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    student[0].weight.data.add_(1.0)
    assert not torch.equal(student[0].weight, teacher[0].weight)


def test_the_update_moves_the_teacher_toward_the_student_unless_the_step_was_skipped():
    torch.manual_seed(0)
    student = nn.Linear(3, 4)
    teacher = ema_copy(student)
    with torch.no_grad():
        student.weight.add_(1.0)
    before = teacher.weight.clone()
    ema_update(teacher, student, 0.9, applied=torch.tensor(False))
    assert torch.equal(teacher.weight, before)  # exactly, not approximately
    ema_update(teacher, student, 0.9, applied=torch.tensor(True))
    torch.testing.assert_close(teacher.weight, 0.9 * before + 0.1 * student.weight)
    again = teacher.weight.clone()
    ema_update(teacher, student, 0.5)
    torch.testing.assert_close(teacher.weight, 0.5 * again + 0.5 * student.weight)
    with pytest.raises(ValueError, match="copy of the student"):
        ema_update(teacher, nn.Linear(3, 4, bias=False), 0.9)


def test_the_momentum_ramps_linearly_to_its_final_value():
    config = EMAConfig(momentum=0.99, final_momentum=1.0)
    assert ema_momentum(config, 0, 100) == 0.99
    assert ema_momentum(config, 50, 100) == pytest.approx(0.995)
    assert ema_momentum(config, 100, 100) == 1.0 == ema_momentum(config, 500, 100)
