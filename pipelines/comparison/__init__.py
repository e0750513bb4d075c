"""The comparison report (pipelines/compare_report.py) in three layers: `load` reads what the
stages wrote, `sections` turns it into tables (with `tables`' statistics and markdown), `plots` draws."""
