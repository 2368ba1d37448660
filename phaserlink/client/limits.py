"""Every limit of the client (sizes, counts, time-outs), named once
(docs/limits.md).  Limits of the protocol code it shares with the
appliance (phaserlink/net, phaserlink/message) are in phaserlink/limits.py."""

# -- client.sending --------------------------------------------------------

SEND_LIMIT = 10 * 1024 * 1024
MIN_LIMIT = 16 * 1024
SEND_COPY_CHUNK = 64 * 1024
HEAD_BYTES = 4096
PROBE_TIMEOUT = 60.0
JOURNAL_KEEP = 5000

# -- client.progress -------------------------------------------------------

BAR_DELAY = 0.5

# -- client.status ---------------------------------------------------------

MAX_STATUS_SIZE = 256 * 1024
POLL_INTERVAL = 15.0
POP3_TIMEOUT = 60.0
CACHE_LIMIT = 10000
