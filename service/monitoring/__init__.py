"""How the model does, from running totals the database keeps, whatever the table holds.

periods     hours, days and weeks as the counts' periods, and the SQL that differs per backend
tables      the totals' tables and the triggers that keep them with every write
population  who is scored: every prediction's proba and feature bins, counted per period
pairs       the pairs a challenger scored beside the running model, counted per period
profile     the training profile: bins, shares, typical values; PSI, the one definition
drift       GET /drift, and the running version's profile as the database keeps it
windows     reading the totals: hours and days, a window's histograms, a cache of periods
histogram   the arithmetic: ROC AUC with its error bound, calibration, distributions
exact       the exact probas of a few bins, when the bound must be 0
pgcopy      PostgreSQL's binary COPY format, read into numpy
reports     the bodies of /stats, /stats/series and /compare, and the pace of their callers
comparison  two models on the same labelled rows (or their counts): paired differences, intervals, a verdict
"""
