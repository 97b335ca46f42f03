"""Loop references of the vision-tower releases, written from their code (one image, plain Python loops), for the
unit and end-to-end tests of `visionzip` and `prumerge_plus`."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def release_visionzip(scores, keys, features, n_dominant, n_contextual):
    """VisionZip's `CLIPVisionTower_VisionZip.forward` on `N` patches (the dominant count without [CLS]): the
    dominant patches (ascending), the targets and the contextual tokens (target + mean of its members)."""
    n = len(scores)
    dominant = sorted(sorted(range(n), key=lambda i: -scores[i])[:n_dominant])
    remaining = [i for i in range(n) if i not in dominant]
    step = max(1, len(remaining) // n_contextual)
    target_at = list(range(0, len(remaining), step))[:n_contextual]
    targets = [remaining[p] for p in target_at]
    members = [remaining[p] for p in range(len(remaining)) if p not in target_at]
    unit = F.normalize(keys, dim=-1)
    groups = {t: [] for t in targets}
    for m in members:
        similarity = [float(unit[m] @ unit[t]) for t in targets]
        groups[targets[similarity.index(max(similarity))]].append(m)
    contextual = []
    for t in targets:
        mean = sum((features[m] for m in groups[t]), torch.zeros_like(features[0])) / max(1, len(groups[t]))
        contextual.append(features[t] + mean)
    return dominant, targets, torch.stack(contextual)


def release_prumerge_plus(attention, keys, features):
    """PruMerge+'s `token_prune_merge_advanced_plus` (adaptive) on `N` patches: the kept indices in the release's
    order (outliers by attention, then samples), their merged vectors, and the extra token. The release's `575` is
    `N - 1` and its 32 neighbours at most `N - 1`."""
    n = attention.numel()
    values = attention.numpy().astype(np.float32)
    q1, q3 = np.percentile(values, 25), np.percentile(values, 75)
    ratio = int((values > q3 + 1.5 * (q3 - q1)).sum()) / n
    idx = torch.topk(attention, int(n * ratio)).indices.tolist()
    step_length = int(1 / ratio)
    idx += [x for x in range(0, n - 1, int(step_length / 3)) if x not in idx]
    compl = [j for j in range(n) if j not in idx]
    unit = F.normalize(keys, dim=-1)
    updated = []
    for i in range(len(idx)):
        rest = idx[:i] + idx[i + 1 :] + compl
        similarity = torch.stack([unit[idx[i]] @ unit[j] for j in rest])
        cluster = [rest[c] for c in torch.topk(similarity, min(32, n - 1)).indices.tolist()]
        updated.append(features[idx[i]] + sum(attention[j] * features[j] for j in cluster))
    extra = sum(attention[j] * features[j] for j in compl)
    return idx, torch.stack(updated), extra
