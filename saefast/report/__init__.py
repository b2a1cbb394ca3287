"""A report: assembled in one place from the statistics (`assemble`), then written as files
(JSON, CSV, PNG plots) and one self-contained HTML page. The only package that decides what a
report contains."""
