"""pika asynchronous adapters (client name: pika-async): AsyncioConnection
and SelectConnection driven by callbacks, as event-loop applications use
them."""
