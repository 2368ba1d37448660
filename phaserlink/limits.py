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

# -- process file limit (issue 11, bench/scale.py) -------------------------

#: File descriptors one printer keeps open while idle: its seen index's two
#: SQLite connections (database, WAL and shared-memory files each) and
#: the console history's share.  Measured: 5 per printer (bench/scale.py).
FDS_PER_PRINTER = 6
#: Descriptors beyond sessions and printers: listeners, the log, thread
#: pools' pipes, converters' pipes, outbound and printer connections.
FDS_BASE = 256

#: Young (generation 1) collections between two full collections, at
#: least: Python's 10 made a full collection every few seconds once
#: start-up was frozen (its "25% more long-lived objects" rule is met at
#: once when the unfrozen part is small), each up to 180 ms at 1,000
#: sessions under load; 100 made them about ten times rarer (bench/scale.py).
GC_YOUNG_PER_FULL = 100

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
#: Page cache of each of a seen index's two SQLite connections, KiB.
#: SQLite's default (2,000 KiB, pre-allocated in part) made the two
#: connections of each printer cost ~300 KB: 150 MB at 500 printers
#: (bench/scale.py).  The lookups are primary-key reads: a few pages each.
SEEN_CACHE_KIB = 64
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

# -- smtp_relay.inflow (issue 11, bench/scale.py; docs/smtp.md) ------------

#: Work waiting for a ``durable`` thread above which a new message is held
#: at MAIL FROM (up to ``in_flow_delay``): two tasks per thread.  A probe's
#: way from its 250 to its printer has three durable steps; at ~3-8 ms a
#: task and four threads, eight waiting is ~6-16 ms a step.
INFLOW_DURABLE_BACKLOG = 8
#: How often held sessions are looked at (one is let go per look while the
#: backlog is under the bound): also the pace, at most 1 / INFLOW_TICK
#: messages a second, while any session is held.
INFLOW_TICK = 0.005

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

# -- smtp_relay.queue ------------------------------------------------------

MAX_CONCURRENT_DELIVERIES = 4  # connections to the smarthost at once
#: On shutdown, how long a delivery attempt in flight may take to finish
#: before it is cancelled (its recipients are then tried after the restart).
QUEUE_STOP_TIMEOUT = 10.0

# -- smtp_relay.mx ---------------------------------------------------------

MX_MAX_SESSIONS_PER_DOMAIN = 2  # transactions to one domain at once (Postfix: 20; we are small)
MX_MAX_SESSIONS_TOTAL = 10  # transactions to all domains at once
IDLE_SESSION_TIME = 2.0  # seconds a used session waits for the next message (Postfix: 2 s)
MAX_MESSAGES_PER_SESSION = 100  # then a fresh connection
MAX_HOSTS = 10  # addresses tried per attempt, at most
DNS_TIMEOUTS = (1, 3, 5)  # seconds per try of twisted.names' client

# -- smtp_relay.dkim_sign --------------------------------------------------

MAX_SIGNED_SIZE = 1 << 20  # bytes; larger messages are queued unsigned (and logged)
DKIM_SIGN_MIN_KEY_BITS = 1024  # RFC 8301 3.2: verifiers must not accept less

# -- printer.output.ipp ----------------------------------------------------

#: Seconds between two Get-Job-Attributes while a job is at the printer.
IPP_POLL_INTERVAL = 2.0
#: Longest a job may stay unfinished at the printer before the spool is told
#: "unavailable" (it is then asked about again, never sent twice).
JOB_WAIT_LIMIT = 24 * 3600.0
#: job-name is a name(MAX) (RFC 8011: 255 octets).
MAX_JOB_NAME = 255

# -- net.ipp_client --------------------------------------------------------

#: Largest IPP response read (a printer's full attribute set is ~10-60 KB).
MAX_RESPONSE = 4 * 1024 * 1024
#: Bytes of a document read from disk per chunk.
IPP_CLIENT_CHUNK_SIZE = 256 * 1024
#: Time-out of a request without a document, and the watchdog of one with:
#: seconds without the printer taking a byte (or answering) after which it is hung.
IPP_CLIENT_REQUEST_TIMEOUT = 60.0
IPP_CLIENT_CONNECT_TIMEOUT = 30.0

# -- net.ipp_codec ---------------------------------------------------------

#: Deepest nesting of collections accepted (media-col has 2 levels; a
#: hostile peer could send thousands).
MAX_COLLECTION_DEPTH = 16

# -- printer.operations ----------------------------------------------------

#: How often finished jobs older than history_days are pruned.
OPERATIONS_PRUNE_INTERVAL = 3600.0
#: Longest an operation waits for the dispatcher to let go of a job being
#: sent (the output's abort is immediate; a conversion runs to its end).
CUT_TIMEOUT = 120.0

# -- printer.history -------------------------------------------------------

#: How long a reader waits for the writer's lock before giving up.
HISTORY_BUSY_TIMEOUT = 5.0
#: Longest title and detail kept (a status line, not a document).
HISTORY_MAX_TEXT = 500
#: Rows pruned per statement, so pruning never holds the lock long.
HISTORY_PRUNE_BATCH = 2000

# -- admin.auth ------------------------------------------------------------

#: How long a checked Basic credential is believed without PBKDF2 again.
CREDENTIAL_CACHE_SECONDS = 300.0
#: Credentials remembered at once (least recently used forgotten first).
CREDENTIAL_CACHE_SIZE = 256
#: A web session ends after this long without a request.
SESSION_IDLE_SECONDS = 8 * 3600.0
#: Sessions held at once (the oldest is dropped first): bounded memory.
AUTH_MAX_SESSIONS = 1000

# -- admin.cli -------------------------------------------------------------

#: Seconds to wait for the console (an operation waits for its fsync).
CLI_TIMEOUT = 30.0

# -- admin.pages -----------------------------------------------------------

#: Seconds between reloads while a job on the page is moving.
REFRESH_SECONDS = 5
#: Jobs on the console's front page.
PAGE_JOBS = 50

# -- admin.web -------------------------------------------------------------

#: Largest request body the console reads (forms and API calls are tiny).
MAX_BODY = 64 * 1024

# -- trust.dns -------------------------------------------------------------

#: Seconds one DNS query may take before it counts as a temperror.
QUERY_TIMEOUT = 3.0
#: Answers kept at most this long whatever their TTL (a record an admin
#: just fixed is seen again within this time).
MAX_CACHE_TTL = 3600
#: Positive answers kept in the resolver's own look-up table in front of
#: dnspython's cache (bounded: emptied when full).
DNS_FAST_ANSWERS = 10_000

# -- trust.headers ---------------------------------------------------------

#: The header block is searched for its end within this many bytes; a
#: message whose header is longer has its first this-many bytes treated as
#: the header (RFC 5322 sets no limit; Postfix's header_size_limit is 100 KiB).
HEADERS_MAX_HEADER_BLOCK = 1024 * 1024

# -- trust.hold ------------------------------------------------------------

#: Release mails per From: address per hour; beyond, jobs are still held
#: (and time out) but no mail is sent.
RELEASE_MAILS_PER_HOUR = 5
#: Addresses whose release mails are counted (bounded memory).
HOLD_MAX_TRACKED = 10_000
#: Bytes of a stored message searched for the hold field (it is near the top).
HEAD_SCAN = 64 * 1024

# -- trust.quota -----------------------------------------------------------

#: Sender/printer pairs remembered; beyond that the least recent is dropped.
QUOTA_MAX_TRACKED_SENDERS = 10_000
SITE_WINDOW = 3600.0

# -- trust.verify ----------------------------------------------------------

#: Whole seconds an SPF evaluation may spend in DNS (RFC 7208 4.6.4 suggests 20).
SPF_TIME_LIMIT = 20.0
#: Signatures looked at per message (each costs a DNS look-up and an RSA check).
MAX_SIGNATURES = 8
#: DKIM key records kept parsed, by their text (emptied when full).
DKIM_PARSED_KEYS = 1000

# -- trust.verifier --------------------------------------------------------

#: Seconds a verifier worker may take to answer one request before the
#: session gets its 451 (SPF alone may spend SPF_TIME_LIMIT in DNS; DKIM and
#: DMARC a few QUERY_TIMEOUTs more).
VERIFY_TIMEOUT = SPF_TIME_LIMIT + 10 * QUERY_TIMEOUT
#: Seconds the workers get to finish at shutdown before they are killed.
VERIFY_STOP_TIMEOUT = 5.0
#: A worker that exited by itself within this many seconds of its start
#: (not killed by a signal) is not started again before this many seconds
#: have passed (meanwhile: 451), so a broken install is not a process per message.
VERIFY_RESTART_DELAY = 2.0
#: Most ``verify_processes`` a site may ask for.
MAX_VERIFY_PROCESSES = 16

# -- smtp_relay.server -----------------------------------------------------

#: Bytes without a LF after which the client is not speaking SMTP: a
#: multiple of the line limit, so an honest long line still gets its 500.
MAX_BUFFERED_LINE_FACTOR = 4
#: Bytes of a message to a release address kept to read its Auto-Submitted.
RELEASE_HEAD = 64 * 1024
#: Bad commands in one session before we hang up (the Postfix way).
MAX_ERRORS = 20
#: Limit of an AUTH response line (RFC 4954 4: 12288 octets).
MAX_AUTH_LINE = 12288
#: Input held while a commit or password check runs (the transport is paused,
#: so this is one read plus pipelined commands); beyond it: 421 and close.
MAX_HELD_INPUT = 256 * 1024
PAUSE_HELD_INPUT = 64 * 1024

# -- printer.convert -------------------------------------------------------

#: Seconds one conversion may take before the child is killed.
CONVERSION_TIMEOUT = 300.0
#: Bytes of Ghostscript's messages kept for the error report (it can print a lot).
MAX_DIAGNOSTICS = 64 * 1024
#: Below this many free bytes where the output goes, a failed conversion is
#: taken to be the disk's fault, whatever Ghostscript said.
LOW_DISK_SPACE = 1024 * 1024
#: How far from the end an output format's end marker may be (trailing
#: newlines, a PDF's startxref is before it).
END_MARKER_WINDOW = 1024
#: Most bytes one converter may write (RLIMIT_FSIZE: a file bomb is killed).
MAX_OUTPUT_BYTES = 1024 * 1024 * 1024
#: Address space of Ghostscript and the picture converter (RLIMIT_AS).
MAX_MEMORY_BYTES = 2 * 1024 * 1024 * 1024
#: Seconds a page count may take.
PAGE_COUNT_TIMEOUT = 60.0
#: How much of a PostScript file's head and tail is read for ``%%Pages:``.
DSC_WINDOW = 64 * 1024

# -- printer.convert_image -------------------------------------------------

#: More pixels than this in one picture is taken for a decompression bomb.
MAX_PIXELS = 200_000_000

# -- message.formats -------------------------------------------------------

HEAD_SIZE = 4096
PDF_SEARCH = 1024

# -- message.extract -------------------------------------------------------

MAX_TITLE = 255
