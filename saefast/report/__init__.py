"""A report: its runs loaded (`inputs`), their data read (`nulls`), every pair matched through
the matching cache (`matchings`), assembled in one place from the statistics (`assemble`), then
written as files (`files`: JSON, CSV, PNG plots) and one self-contained HTML page. The only
package that decides what a report contains."""
