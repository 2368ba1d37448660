"""The admin console: JSON API, web page, /metrics, /healthz and the
``phaserlink-admin`` CLI (docs/console.md).  It drives the printer side
through :class:`phaserlink.printer.control.IPrinterControl` only."""
