"""Which checkpoints a trial keeps (``CheckpointConfig``): a choice, no I/O."""

from __future__ import annotations


def select_kept(
    kept: list[tuple[str, float | None]], num_to_keep: int, by_score: bool, order: str
) -> tuple[list[tuple[str, float | None]], list[str]]:
    """``CheckpointConfig`` pruning: which checkpoints stay (oldest first) and which go.

    The best ``num_to_keep`` stay (the most recent ones when there is no score
    attribute; checkpoints without a score rank last), and the latest always
    stays too, since a retry or a restart resumes from it.
    """
    if num_to_keep <= 0 or len(kept) <= num_to_keep:
        return kept, []
    ranked = list(range(len(kept)))
    if by_score:
        sign = 1.0 if order == "max" else -1.0

        def rank(i: int) -> tuple[bool, float, int]:
            score = kept[i][1]
            return (score is not None, sign * score if score is not None else 0.0, i)

        ranked.sort(key=rank, reverse=True)
    else:
        ranked.reverse()
    stay = set(ranked[:num_to_keep]) | {len(kept) - 1}
    return [c for i, c in enumerate(kept) if i in stay], [
        c[0] for i, c in enumerate(kept) if i not in stay
    ]
