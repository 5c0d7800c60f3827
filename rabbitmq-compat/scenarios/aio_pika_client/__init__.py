"""aio-pika scenarios (client name: aio-pika): asyncio applications using
connect_robust, queue iterators, the RPC pattern, publisher confirms,
mandatory returns and channel-level errors."""
