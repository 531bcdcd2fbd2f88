"""Tabular NAS-Bench-201 mode: search strategies scored by table look-up.

`table` (arch strings and indices, the `Table` and `load_table`, the
`QueryBudget` of distinct look-ups, `SearchResult`), `strategies` (ppo,
reinforce, evolution, random; `run_strategy` by name) and `run` (comparing
strategies at equal budgets, the JSON and plot outputs, `run_from_config`
for `config.mode = "tabular"`).
"""
