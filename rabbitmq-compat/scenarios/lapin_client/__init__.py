"""lapin (Rust, 4.12) scenarios (client name: lapin).

Every scenario is one function in rabbitmq-compat/lapin/src/main.rs, run as
``lapin-scenarios NAME URL PREFIX``.  run.sh builds the binary with
``cargo build --release --manifest-path rabbitmq-compat/lapin/Cargo.toml``
(target dir target/lapin-compat, set in lapin/.cargo/config.toml); when cargo
is missing it sets COMPAT_SKIP_LAPIN=1 and these scenarios are not registered."""
import os

from scenarios.framework import external

_HERE = os.path.dirname(os.path.abspath(__file__))
_COMPAT = os.path.dirname(os.path.dirname(_HERE))
_BIN = os.path.join(os.path.dirname(_COMPAT), "target", "lapin-compat", "release", "lapin-scenarios")

if os.environ.get("COMPAT_SKIP_LAPIN") != "1":
    for _area, _name, _doc in [
        ("basic", "publish-get-properties",
         "publish with every basic property and a header table, basic.get round trip (ack and no-ack), empty get"),
        ("basic", "consume-prefetch-nack-requeue",
         "basic_qos(2) consumer: two deliveries, none more before an ack, nack(requeue) of m1 comes back redelivered; tags and flags"),
        ("confirms", "confirms-mandatory-return",
         "confirm channel: ack/nack for routable and unroutable publishes, mandatory basic.return code/text, wait_for_confirms, publish to a missing exchange"),
        ("queue", "passive-declare-missing",
         "queue.declare/exchange.declare passive on missing names as lapin reports the error (code, text), channel state afterwards"),
        ("exchange", "exchange-bindings",
         "exchange_bind topic->fanout, routing through it, exchange_unbind (twice), bind to a missing source"),
        ("tx", "tx-select-commit-rollback",
         "tx_select, message counts before/after commit and rollback, acks rolled back, tx_commit without select"),
    ]:
        external(_area, _name, [_BIN, _name], "lapin", cwd=_COMPAT, doc=_doc)
