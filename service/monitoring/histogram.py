"""A histogram of labelled probabilities, per bin, and what it says about ranking and calibration.

Contract:
- `Histogram(bins)` holds, per bin, the labelled positives and negatives, their summed proba and
  the smallest and largest proba the bin has held; `add_rows()` adds (or with sign -1 takes
  away) rows of stats_bin cells; `merge()` adds another histogram; `exact` holds, for some bins,
  the rows' exact probas ({bin: {proba: [positives, negatives]}}), read by exact.py.
- `roc_auc()` is the Mann-Whitney statistic over the bins, ties counted as half, with
  `max_error`, the most it can differ from the statistic over the rows: pairs in different bins
  are ordered exactly; only a positive and a negative sharing a bin whose smallest and largest
  proba differ (and whose exact probas weren't read) are unknown, and each such pair counts 1/2
  where the truth is 0, 1/2 or 1. So |binned - exact| <= sum(pos_b * neg_b) / (2 P N) over those
  bins: about 3e-5 with probas spread evenly over 10,000 bins.
- `worst_bins(target)` names the bins whose exact probas would bring max_error down to target;
  `rolled_up(groups)` sums the bins into coarser groups (calibration, the histogram shown).
Pure arithmetic: nothing here reads the database.
"""

import numpy as np

from service.monitoring.periods import FINE_BINS


class Histogram:
    """Per fine bin: positives, negatives, sum of proba, smallest and largest proba (numpy arrays);
    and for some bins the rows' exact probas: {bin: {proba: [positives, negatives]}}."""

    def __init__(self, bins=FINE_BINS):
        self.positives = np.zeros(bins, dtype=np.int64)
        self.negatives = np.zeros(bins, dtype=np.int64)
        self.sum_proba = np.zeros(bins)
        self.low = np.full(bins, 2.0)  # no proba yet: low > high
        self.high = np.full(bins, -1.0)
        self.exact = {}

    def add_rows(self, rows, sign=1):
        """rows: (bin, positives, negatives, sum_proba, min_proba, max_proba), one per bin. With
        sign -1 they are taken away; the extremes stay (still bounds, if wider than needed)."""
        if not len(rows):
            return self
        bins, pos, neg, sum_proba, low, high = np.asarray(rows, dtype=float).T
        bins = bins.astype(np.int64)
        self.positives[bins] += sign * pos.astype(np.int64)
        self.negatives[bins] += sign * neg.astype(np.int64)
        self.sum_proba[bins] += sign * sum_proba
        if sign > 0:
            self.low[bins] = np.minimum(self.low[bins], low)
            self.high[bins] = np.maximum(self.high[bins], high)
        return self

    def merge(self, other):
        self.positives += other.positives
        self.negatives += other.negatives
        self.sum_proba += other.sum_proba
        np.minimum(self.low, other.low, out=self.low)
        np.maximum(self.high, other.high, out=self.high)
        for bin, probas in other.exact.items():
            mine = self.exact.setdefault(bin, {})
            for proba, (pos, neg) in probas.items():
                counts = mine.setdefault(proba, [0, 0])
                counts[0] += pos
                counts[1] += neg
        return self

    def unknown_pairs(self):
        """Per bin, the positive-negative pairs whose order the counts alone don't tell."""
        unknown = np.where(self.low < self.high, self.positives * self.negatives, 0)
        unknown[list(self.exact)] = 0
        return unknown

    def roc_auc(self):
        """(ROC AUC, max_error), or (None, None) without both classes; see the module docstring."""
        positives, negatives = int(self.positives.sum()), int(self.negatives.sum())
        if not positives or not negatives:
            return None, None
        below = np.cumsum(self.negatives) - self.negatives  # negatives in the bins below each bin
        ranked = self.positives * (below + self.negatives / 2)
        for bin, probas in self.exact.items():
            ranked[bin] = ranked_within(probas, int(below[bin]))
        pairs = positives * negatives
        return float(ranked.sum()) / pairs, float(self.unknown_pairs().sum()) / 2 / pairs

    def worst_bins(self, target):
        """The bins whose exact probas would bring max_error down to `target`, worst first."""
        allowed = 2 * target * int(self.positives.sum()) * int(self.negatives.sum())
        unknown = self.unknown_pairs()
        order = np.argsort(-unknown, kind="stable")
        left_after = unknown.sum() - np.cumsum(unknown[order])  # unknown pairs left once these are read
        needed = int(np.searchsorted(-left_after, -allowed)) + 1 if unknown.sum() > allowed else 0
        return [int(bin) for bin in order[:needed]]

    def rolled_up(self, groups):
        """(positives, negatives, sum_proba), each summed into `groups` groups of bins."""
        return tuple(
            column.reshape(groups, -1).sum(axis=1)
            for column in (self.positives, self.negatives, self.sum_proba)
        )


def ranked_within(probas, negatives_below):
    """Pairs ordered right (ties as half) for the positives among rows of exactly known probas."""
    ranked = 0
    for proba in sorted(probas):
        pos, neg = probas[proba]
        ranked += pos * (negatives_below + neg / 2)
        negatives_below += neg
    return ranked
