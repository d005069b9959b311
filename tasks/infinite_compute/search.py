"""The paper's "locally optimal" hyperparameter search (card §3.1), as a chain of cached runs.

A configuration is locally optimal when every one-grid-step neighbour (epochs -/+, LR -/+,
wd -/+; only the tuned axes) has been trained and none has a lower validation loss.

The search is replayed from the records of the chain's earlier steps, so step k of a chain
is a pure function of steps 0..k-1: the centre is the best point evaluated so far (ties: the
earlier one); the next probe is the centre's first unevaluated neighbour in ``ORDER``;
when the centre has none left it is certified and later steps are no-ops. This is the
greedy form of "move to the best neighbour, repeat until certified": it never moves to a
neighbour that is not better, and it certifies with the same 6-neighbour rule.
"""

from __future__ import annotations

from typing import Mapping, Sequence

#: Neighbour order: longer training and more regularisation first (where the optimum
#: usually moves in the data-constrained regime), then the opposite directions, then LR.
ORDER = (("epochs", +1), ("wd", +1), ("epochs", -1), ("wd", -1), ("lr", -1), ("lr", +1))

Point = dict


def key(point: Mapping) -> tuple:
    return tuple(sorted((k, float(v)) for k, v in point.items()))


def _index(grid: Sequence, value) -> int:
    for i, g in enumerate(grid):
        if abs(float(g) - float(value)) <= 1e-12 * max(1.0, abs(float(g))):
            return i
    raise ValueError(f"{value} is not on the grid {list(grid)}")


def neighbours(point: Mapping, grids: Mapping[str, Sequence]) -> list[Point]:
    """One-grid-step neighbours of ``point`` along the tuned axes (those in ``grids``), in ORDER."""
    out = []
    for axis, step in ORDER:
        if axis not in grids:
            continue
        i = _index(grids[axis], point[axis]) + step
        if 0 <= i < len(grids[axis]):
            out.append({**point, axis: grids[axis][i]})
    return out


def best(evaluated: Sequence[tuple[Mapping, float]]) -> tuple[Point, float] | None:
    """Lowest loss; ties go to the earlier point. Non-finite losses never win."""
    top = None
    for point, loss in evaluated:
        if loss == loss and loss != float("inf") and (top is None or loss < top[1]):
            top = (dict(point), float(loss))
    return top


def next_probe(evaluated: Sequence[tuple[Mapping, float]], start: Mapping, grids: Mapping[str, Sequence]) -> Point | None:
    """The point to train next, or None when the best point so far is certified."""
    seen = {key(p) for p, _ in evaluated}
    top = best(evaluated)
    if top is None:
        return dict(start) if key(start) not in seen else None
    for nb in neighbours(top[0], grids):
        if key(nb) not in seen:
            return nb
    return None


def certificate(evaluated: Sequence[tuple[Mapping, float]], grids: Mapping[str, Sequence]) -> dict:
    """Best point, whether it is certified, and its neighbours' losses."""
    losses = {key(p): l for p, l in evaluated}
    top = best(evaluated)
    if top is None:
        return {"point": None, "val_loss": float("nan"), "certified": False, "neighbours": []}
    nbs = [{"point": nb, "val_loss": losses.get(key(nb))} for nb in neighbours(top[0], grids)]
    certified = all(n["val_loss"] is not None and not n["val_loss"] < top[1] for n in nbs)
    return {"point": top[0], "val_loss": top[1], "certified": certified, "neighbours": nbs}


def axis_neighbour_losses(evaluated, point: Mapping, grids: Mapping[str, Sequence], axis: str) -> tuple:
    """(loss one grid step below, loss one step above) along ``axis``; None where absent."""
    losses = {key(p): l for p, l in evaluated}
    out = []
    for step in (-1, +1):
        i = _index(grids[axis], point[axis]) + step
        out.append(losses.get(key({**point, axis: grids[axis][i]})) if 0 <= i < len(grids[axis]) else None)
    return tuple(out)
