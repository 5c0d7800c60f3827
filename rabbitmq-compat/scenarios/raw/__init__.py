"""Raw-frame scenarios: a minimal socket AMQP client (client name: raw)."""
