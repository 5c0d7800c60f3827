"""kombu scenarios (client name: kombu): Celery-style use of kombu's
Connection/Producer/Consumer/Queue/Exchange, pidbox mailboxes, SimpleQueue,
kombu Message ack/reject/requeue and kombu's view of broker errors."""
