"""Route workers: the Celery app and tasks, the event-loop worker, their shared pipeline."""
