"""When plans are made: the day-ahead schedule and the site partitions sensor."""
