"""Exponential-moving-average teachers (Tarvainen & Valpola 2017)."""
from __future__ import annotations

import copy

import torch
from torch import nn


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of the student: its weights only ever change through ``ema_update``."""
    teacher = copy.deepcopy(student)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, step: int) -> None:
    """``theta' <- a theta' + (1 - a) theta`` with ``a = min(1 - 1 / (step + 1), decay)`` (SSL4MIS
    ``update_ema_variables``: the true average while ``step`` is small).  Only parameters are averaged;
    BatchNorm statistics of the teacher come from its own forward passes in training mode, as in SSL4MIS."""
    alpha = min(1.0 - 1.0 / (step + 1), decay)
    for teacher_param, student_param in zip(teacher.parameters(), student.parameters()):
        teacher_param.mul_(alpha).add_(student_param.detach(), alpha=1.0 - alpha)
