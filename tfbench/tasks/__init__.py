"""Tasks and where they run: a study as a plan of tasks with needs, shards and cost (`plan`), the
executors that run them locally or on Ray (`executors`), and a lock per task so that several
drivers share one output folder (`locks`). Nothing here knows a regime: tfbench.study makes the
tasks of each run."""
