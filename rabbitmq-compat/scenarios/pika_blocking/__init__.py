"""pika BlockingConnection scenarios (client name: pika)."""
