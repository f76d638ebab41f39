"""Window evaluation: what a window of a version's traffic is compared with (profiles,
references), the per-bucket summaries every prediction is folded into once, the merge of a
window's buckets, the computations and decisions over a merged window, the result rows the
jobs store, and the one catalogue of stored metric names.

Jobs (app/jobs) schedule and run these; REST reports (app/api) call the same functions, so a
report over a stored window equals the stored values.
"""
