"""The report: tables, figures and statistics over a study's run records.

    python -m tfbench.report --output_dir=runs

`build` collects the records and writes report.md, report.json, CSVs and figures; every other
module here is one analysis of the paper (or tfbench's own), computed from records alone.
"""
