"""Background responses: the runner, its lease and event log, cancel, resume, and the reaper of orphans."""
