"""Planning a site-day: the dispatch schedule (MILP, rule-based fallback), its checks and reports."""
