"""Dead letters: the headers a dead letter carries, the durable store operators search,
the collector that fills it from the dead-letter queues, and replay."""
