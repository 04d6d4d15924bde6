"""When plans are made: the day-ahead schedule, and the sensors that add site partitions
(site_partitions_sensor), plan a failed run's complete days (partition_recovery_sensor) and
re-plan days whose forecast or prices changed (stale_plan_sensor)."""
