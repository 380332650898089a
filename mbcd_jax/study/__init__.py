"""The study tools: run a grid of methods x seeds on the embedded benchmark (experiments.py),
tabulate its results with paired statistics (tables.py, paper_numbers.py), run it over several
synthetic worlds (worlds.py), render the results page (results_page.py), and read compiled
programs' FLOPs and bytes (hlo_cost.py, used by the roofline benchmark). They import the
runtime; nothing in the runtime imports them."""
