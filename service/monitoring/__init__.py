"""How the model does, from running totals the database keeps, whatever the table holds.

tables      the totals' tables and the triggers that keep them with every write
windows     reading them: hours and days, a window's histograms, a cache of periods
histogram   the arithmetic: ROC AUC with its error bound, calibration, distributions
exact       the exact probas of a few bins, when the bound must be 0
pgcopy      PostgreSQL's binary COPY format, read into numpy
reports     the bodies of /stats and /stats/series, and the pace of their callers
"""
