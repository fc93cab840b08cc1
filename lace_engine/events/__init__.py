"""Live event delivery: how committed run events reach the streams of every process.

  hub.py               the per-process hub: each run's committed events to its local streams,
                       in seq order and once, bounded per stream
  stream_run.py        StreamRun without a transport: replay from Postgres, then tail the hub
  pg_notify.py         LISTEN/NOTIFY: how a process learns of commits made by other processes
  nats_bus.py          the NATS connection and the JetStream streams LACE uses
  jetstream_mirror.py  publishes the committed event log to JetStream (leader-elected outbox)
  jetstream_tail.py    feeds the hub with the mirrored events of the runs streamed here (one NATS
                       subscription per run), with a Postgres fallback

Postgres is the truth (`lace_engine.storage.event_log`); everything here only decides how soon a stream
sees it. These modules never import the runs layer (`orchestrator`, `jobs`, `llm_limit`);
`lace_engine.cluster` composes them with it.
"""
