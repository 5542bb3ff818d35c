"""The paper's inference recipe, for a cost comparison (random weights; the cost of a
forward pass does not depend on the weights).

Seven nets as in ../shared/method.md, built from timm by the paper's names at 256 x 256
input with 256-d encoder outputs and the V2 / V3 / V3c heads; every 64 x 64 patch is
resized to 256 x 256 and goes through 7 nets x 5 fold models x 4 flips = 140 forward
passes.  The 5 fold models of one net share its architecture, so one random instance
is run five times (same FLOPs, less memory than five instances).
"""
from __future__ import annotations

import time

import numpy as np

PAPER_SIZE = 256
N_FOLDS = 5
N_FLIPS = 4

# channel groups (indices into the 12 package channels; "idx" = the six indices)
RGBN, SAR_VVVH, SAR_DIFF, SAR_ALL = [0, 1, 2, 3], [4, 5, 8, 9], [6, 7, 10, 11], list(range(4, 12))

# (name, head, [(timm name, channels, with indices)])
PAPER_MEMBERS = (
    ("maxvit_tiny_single", "single", [("maxvit_tiny_rw_256", RGBN, False)]),
    ("vit_medium_single", "single", [("vit_medium_patch16_gap_256", SAR_ALL, True)]),
    ("2x_vit_pwee_v2_z", "v2", [("vit_pwee_patch16_reg1_gap_256", RGBN, False),
                                ("vit_pwee_patch16_reg1_gap_256", SAR_DIFF, False)]),
    ("2x_vit_pwee_v2_robust", "v2", [("vit_pwee_patch16_reg1_gap_256", RGBN, False),
                                     ("vit_pwee_patch16_reg1_gap_256", SAR_DIFF, False)]),
    ("3x_vit_pwee_v3", "v3", [("vit_pwee_patch16_reg1_gap_256", RGBN, False),
                              ("vit_pwee_patch16_reg1_gap_256", SAR_DIFF, False),
                              ("vit_pwee_patch16_reg1_gap_256", [], True)]),
    ("3x_caformer_s18_v3", "v3", [("caformer_s18", RGBN, False), ("caformer_s18", SAR_DIFF, False),
                                  ("caformer_s18", [], True)]),
    ("3x_vit_medium_rope_v3c", "v3c", [("vit_medium_patch16_rope_reg1_gap_256", RGBN, False),
                                       ("vit_medium_patch16_rope_reg1_gap_256", SAR_VVVH, False),
                                       ("vit_medium_patch16_rope_reg1_gap_256", SAR_DIFF, False)]),
)


def _build(head: str, encoders):
    import timm
    import torch
    from torch import nn

    class PaperNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.encs = nn.ModuleList(
                timm.create_model(name, pretrained=False, in_chans=len(ch) + (6 if idx else 0), num_classes=256)
                for name, ch, idx in encoders)
            g, d = len(encoders), 256
            if head == "single":
                self.head = nn.Linear(d, 1)
            elif head == "v2":
                self.fc, self.bn, self.out = nn.Linear(g * d, d), nn.BatchNorm1d(d), nn.Linear((g + 1) * d, 1)
            elif head == "v3":
                self.fc, self.bn = nn.Linear(g * d, 2 * d), nn.BatchNorm1d(2 * d)
                self.fc2, self.drop, self.out = nn.Linear((g + 2) * d, 2 * d), nn.Dropout(0.1), nn.Linear(2 * d, 1)
            else:  # v3c
                self.fc, self.out = nn.Linear(g * d, d), nn.Linear((g + 1) * d, 1)

        def forward(self, *xs):
            x = torch.cat([e(t) for e, t in zip(self.encs, xs)], dim=1)
            if head == "single":
                return self.head(x)
            if head == "v2":
                return self.out(torch.cat([self.bn(self.fc(x)), x], dim=1))
            if head == "v3":
                return self.out(self.drop(self.fc2(torch.cat([self.bn(self.fc(x)), x], dim=1))))
            return self.out(torch.cat([torch.relu(self.fc(x)), x], dim=1))

    return PaperNet().eval()


def _inputs(patches_t, indices_t, encoders):
    import torch

    xs = []
    for _name, ch, idx in encoders:
        parts = ([patches_t[:, ch]] if ch else []) + ([indices_t] if idx else [])
        xs.append(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0])
    return xs


def run_paper_recipe(patches: np.ndarray, s2_offset: float, threads: int = 2, folds: int = N_FOLDS,
                     log=print, members=None) -> dict:
    """Time the recipe on ``patches`` (n, 12, 64, 64) in package convention (filled, no NaN).

    Returns seconds per patch (``folds`` < 5 is scaled up to 5 and says so), the FLOPs
    per patch (FlopCounterMode with attention counted, one forward of each net x 20) and per-member seconds."""
    import torch
    import torch.nn.functional as F

    from ..core.indices import INDEX_DEFS, compute_indices
    from ..training.nets import counting_flops

    torch.set_num_threads(threads)
    n = len(patches)
    # z-score with the competition statistics (the cost is the same for robust scaling)
    from ..models.package import COMPETITION_NORMALISATION as N

    mean = np.array(N["zscore"]["mean"], np.float32)[None, :, None, None]
    std = np.array(N["zscore"]["std"], np.float32)[None, :, None, None]
    per_member, flops = {}, 0
    t_all = time.perf_counter()
    with torch.inference_mode():
        for name, head, encoders in PAPER_MEMBERS:
            if members is not None and name not in members:
                continue
            torch.manual_seed(0)
            net = _build(head, encoders)
            with counting_flops() as fc:
                p1 = torch.zeros(1, 12, PAPER_SIZE, PAPER_SIZE)
                net(*_inputs(p1, torch.zeros(1, 6, PAPER_SIZE, PAPER_SIZE), encoders))
            flops += fc.get_total_flops() * N_FLIPS * N_FOLDS
            t0 = time.perf_counter()
            # resize 64 -> 256 and the indices, as the reference notebooks do per batch
            x = torch.from_numpy(((patches - mean) / std).astype(np.float32))
            idx = torch.from_numpy(compute_indices(patches, list(INDEX_DEFS), s2_offset))
            x = F.interpolate(x, size=PAPER_SIZE, mode="bilinear", align_corners=False)
            idx = F.interpolate(idx, size=PAPER_SIZE, mode="bilinear", align_corners=False)
            views = [lambda a: a, lambda a: a.flip(-1), lambda a: a.flip(-2), lambda a: a.flip(-1, -2)]
            acc = torch.zeros(n)
            for _fold in range(folds):
                logits = 0.0
                for v in views:
                    logits = logits + net(*_inputs(v(x), v(idx), encoders)).reshape(n)
                acc += torch.sigmoid(logits / N_FLIPS)
            dt = (time.perf_counter() - t0) * N_FOLDS / folds
            per_member[name] = dt / n
            log(f"paper recipe: {name}: {dt / n:.2f} s/patch")
            del net
    total = sum(per_member.values())
    return {"seconds_per_patch": total, "flops_per_patch": int(flops), "patches": n, "folds_run": folds,
            "scaled_from_folds": folds != N_FOLDS, "per_member_seconds_per_patch": per_member,
            "wall_seconds": time.perf_counter() - t_all}
