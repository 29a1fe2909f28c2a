"""tqdm's progress bars, shown on the main process only, and never where tqdm's ``TQDM_DISABLE`` turns bars off."""

from __future__ import annotations


def progress_bar(iterable=None, *, show: bool = True, **kwargs):
    """A ``tqdm.auto.tqdm`` bar where ``show`` (the main process); off elsewhere. ``disable`` is passed only to turn
    the bar off: an explicit ``disable=False`` would override ``TQDM_DISABLE=1`` (tqdm reads its environment only for
    arguments not given)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs) if show else tqdm(iterable, disable=True, **kwargs)
