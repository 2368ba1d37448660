"""Every limit of the appliance and of the parts it shares with the client
(sizes, counts, time-outs), named once (docs/limits.md).

Each module that enforces a limit imports it from here under its old
name; this module imports nothing, so the client may use it too.
"""

# -- passwords -------------------------------------------------------------

MIN_ITERATIONS = 1_000

# -- threads ---------------------------------------------------------------

#: Worker threads per pool.  The disk pool is wider than the cores: its
#: threads mostly wait for the disk, and group-committed fsyncs want several
#: in flight.  CPU work gets one thread per core of the reference machine
#: (the reactor is the third busy thread).  Lookups mostly wait too.
DURABLE_THREADS = 4
CPU_THREADS = 2
LOOKUP_THREADS = 4

# -- POP3 client (both sides) ----------------------------------------------

#: Seconds a server may stay silent while we wait for a reply (or RETR data).
POP3_CLIENT_TIMEOUT = 60.0
#: Longest status or listing line we accept (RFC 2449 allows 512; be lenient).
MAX_RESPONSE_LINE = 8192
#: Most lines in a multi-line listing (CAPA, LIST, UIDL): a mailbox with more
#: messages than this is not a printer's; it protects our memory.
MAX_LISTING_LINES = 1_000_000
#: Longest server text kept in an error message.
MAX_ERROR_TEXT = 512

# -- SMTP client (both sides) ----------------------------------------------

SMTP_CLIENT_TIMEOUT = 300.0  # RFC 5321 4.5.3.2 suggests 5 minutes for most replies
QUIT_TIMEOUT = 10.0  # a polite QUIT must not hold up the caller
SMTP_CLIENT_CHUNK_SIZE = 16384  # bytes read from the message file per producer turn
MAX_REPLY_LINE = 8192  # RFC 5321 says 512; be lenient, but bounded
MAX_REPLY_LINES = 200  # a multi-line reply longer than this is an attack
WIRE_SCAN_CHUNK = 1 << 20  # bytes read at a time when measuring the wire size

# -- service ---------------------------------------------------------------

#: Longest wait for one part to stop before shutdown goes on without it:
#: the printers' send in flight is cut after the dispatcher's STOP_GRACE
#: (10 s), queue attempts are bounded by their own time-outs.
APPLIANCE_STOP_TIMEOUT = 30.0

# -- config ----------------------------------------------------------------

MAX_LOCAL_PART = 64

# -- printer.dispatch ------------------------------------------------------

#: First wait after a printer failed, then multiplied by RETRY_FACTOR per
#: failure in a row, never more than RETRY_MAX.
RETRY_INITIAL = 5.0
RETRY_FACTOR = 2.0
RETRY_MAX = 600.0
#: How long stopping the service waits for a job being sent before cutting it.
DISPATCH_STOP_GRACE = 10.0

# -- printer.toolkit -------------------------------------------------------

#: How much of a message's start is searched for its sender when its header
#: cannot be read as a whole (too large, a line too long): enough for the
#: Return-Path: and Received: lines a delivery puts first, and bounded.
SENDER_SCAN_BYTES = 64 * 1024

# -- printer.intake --------------------------------------------------------

#: A set claiming more parts than this is refused (a 500 MB job in 5 MB
#: fragments has 100; this leaves room without inviting abuse).
INTAKE_MAX_PARTS = 10_000
#: Seconds before a set's completion or time-out that could not be written
#: (a full disk) is tried again.
SPOOL_RETRY = 30.0

# -- printer.local_source --------------------------------------------------

LOCAL_SOURCE_COPY_CHUNK = 1 << 18

# -- printer.output.pjl ----------------------------------------------------

MAX_MESSAGE = 16 * 1024
NAME_MAX = 80

# -- printer.output.raw_socket ---------------------------------------------

# A printer busy rendering may stop reading for minutes; five minutes
# without taking a byte (or without closing once it has everything) is hung.
SOCKET_TIMEOUT = 300.0
# Longest wait for "USTATUS JOB END" after the last byte: the printer
# reports it only when the last page is out.
PJL_END_TIMEOUT = 600.0

# -- printer.output.lpd ----------------------------------------------------

# Longest wait for any ack or for the server to take more data.  LPRng
# checks disk space and may fork filters before answering; 60 s is ample.
LPD_TIMEOUT = 60.0
REFUSAL_TEXT_MAX = 4096
# RFC 1179 section 7 field limits (bytes).
HOST_MAX = 31
USER_MAX = 31
JOB_NAME_MAX = 99
SOURCE_NAME_MAX = 131

# -- printer.output.file_output --------------------------------------------

FILE_OUTPUT_COPY_CHUNK = 1024 * 1024

# -- printer.output.transfer -----------------------------------------------

# Bytes read from the job file per pull.  Twisted's TCP transport sends at
# most 128 KiB per write call; two of those per read keeps the file reads
# few without holding more than this much of a job in memory.
TRANSFER_CHUNK_SIZE = 256 * 1024
# How long to wait for a TCP connection to the printer.
CONNECT_TIMEOUT = 30.0

# -- printer.journal -------------------------------------------------------

#: The shortest redelivery window kept, whatever the configuration says:
#: a crash between spool and delete is redelivered within one poll, a
#: relay's duplicate within its queue lifetime; a day costs nothing.
MIN_WINDOW = 86400.0
#: How often the spool prunes records older than the window.
PRUNE_INTERVAL = 3600.0
#: Seconds a lookup waits for a writer that holds the database (WAL
#: readers normally never wait; this bounds the rare recovery case).
READ_TIMEOUT = 1.0

# -- pop3_store.streaming --------------------------------------------------

#: Bytes read from disk per step.
POP3_STREAM_CHUNK_SIZE = 64 * 1024

# -- pop3_store.server -----------------------------------------------------

#: RFC 2449 section 4: a command line is at most 255 octets; we take some
#: slack for clients that count differently, and refuse longer lines.
MAX_COMMAND_LINE = 512
#: Bytes of pipelined commands held while a command is busy before we stop
#: reading from the client.
MAX_PENDING_INPUT = 64 * 1024
#: Unknown or malformed commands per connection before we hang up.
MAX_BAD_COMMANDS = 20
#: RFC 1939 section 3: an autologout timer of at least 10 minutes.
RFC_MIN_TIMEOUT = 600.0
#: RFC 2449 UIDL: 1-70 characters in 0x21-0x7E.
MAX_UIDL = 70

# -- message.report --------------------------------------------------------

MAX_REPORT_PART = 64 * 1024

# -- message.partial -------------------------------------------------------

PARTIAL_COPY_CHUNK = 1 << 18
NEWLINE_WINDOW = 64 * 1024
MAX_FRAGMENTS = 100_000
MAX_ID = 1000

# -- message.fields --------------------------------------------------------

MAX_COPIES = 999

# -- message.build ---------------------------------------------------------

BUILD_MAX_HEADER_LINE = 78

# -- message.mime ----------------------------------------------------------

MIME_MAX_HEADER_BYTES = 256 * 1024
MAX_LINE = 64 * 1024
SCAN_CHUNK = 1 << 18
MAX_BOUNDARY_LINE = 1000
MAX_DEPTH = 16
MIME_MAX_PARTS = 1000

# -- smtp_relay.data -------------------------------------------------------

#: RFC 5321 6.3 asks for a hop limit of at least 100; more is a loop.
MAX_RECEIVED = 100

# -- smtp_relay.bounce -----------------------------------------------------

BOUNCE_MAX_HEADER_BYTES = 64 * 1024  # original headers quoted in the bounce

# -- trust.logins ----------------------------------------------------------

#: Seconds from the start of a failed login attempt to its answer.
FAILURE_DELAY = 2.0
#: Failed logins an address may make before it is refused (the bucket size).
FAILURE_BURST = 10
#: Failed logins an address earns back per hour (the bucket's refill rate).
FAILURES_PER_HOUR = 30
#: Failed logins in one session before the session is closed.
FAILURES_PER_SESSION = 3
#: Client addresses whose failures are remembered (bounded memory).
MAX_TRACKED_ADDRESSES = 10_000
#: IPv6 clients are counted per prefix of this length (one subscriber's LAN).
IPV6_PREFIX = 64
#: Password checks (PBKDF2) running at once: one core of the reference
#: machine, leaving the other to the reactor and the print work.
CONCURRENT_CHECKS = 1
#: Password checks waiting for their turn before attempts are answered busy
#: (32 x 0.05-0.1 s at 200,000 rounds: a wait of the order of FAILURE_DELAY).
WAITING_CHECKS = 32
