"""The controller process: kopf handlers, the in-memory placement state behind them (the
one writer of claims and host allocations), migrations, evacuation and failover. Decisions
are asked of `core`; this package reads objects, holds state and writes status."""
