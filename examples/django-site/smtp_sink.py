"""A tiny SMTP server (aiosmtpd) that stands for the site's mail relay, and fails on purpose.

The first delivery attempt for each recipient is refused at RCPT TO with `451` (a temporary
failure, as greylisting relays answer), so the site's mail task has to retry; later attempts
are accepted. Every decision is printed to stdout, for `kubectl logs`:

    REFUSED to=a@example.com attempt=1 reply=451
    DELIVERED to=a@example.com subject=Welcome to the shop

Accepted messages are also appended to SMTP_SINK_MAILBOX (default /tmp/smtp-sink.mbox).

    python3 smtp_sink.py [HOST:PORT]     # default 0.0.0.0:2525 (SMTP_SINK_LISTEN)
"""

import asyncio
import email
import email.policy
import os
import signal
import sys
import time

from aiosmtpd.smtp import SMTP


def log(line):
    print(line, flush=True)


class Sink:
    """aiosmtpd handler: refuses each recipient's first attempt, then accepts."""

    def __init__(self, mailbox=None):
        self.mailbox = mailbox
        self.attempts = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        key = address.lower()
        attempt = self.attempts.get(key, 0) + 1
        self.attempts[key] = attempt
        if attempt == 1:
            log(f"REFUSED to={address} attempt={attempt} reply=451")
            return "451 4.7.1 Greylisted: try again later"
        log(f"ACCEPTED to={address} attempt={attempt}")
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        subject = str(message.get("Subject", ""))
        for rcpt in envelope.rcpt_tos:
            log(f"DELIVERED to={rcpt} subject={subject}")
        if self.mailbox:
            with open(self.mailbox, "ab") as f:
                f.write(f"From {envelope.mail_from} {time.asctime()}\n".encode())
                f.write(raw.rstrip(b"\r\n") + b"\n\n")
        return "250 Message accepted for delivery"


async def serve(host, port, mailbox):
    handler = Sink(mailbox)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="smtp-sink", decode_data=False), host, port
    )
    # PID 1 of its container: without a handler SIGTERM would be ignored.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.close)
    log(f"smtp sink listening on {host}:{port}")
    async with server:
        try:
            await server.serve_forever()
        except asyncio.CancelledError:
            pass
    log("smtp sink stopped")


def main(argv):
    listen = argv[1] if len(argv) > 1 else os.environ.get("SMTP_SINK_LISTEN", "0.0.0.0:2525")
    host, _, port = listen.rpartition(":")
    mailbox = os.environ.get("SMTP_SINK_MAILBOX", "/tmp/smtp-sink.mbox")
    asyncio.run(serve(host or "0.0.0.0", int(port), mailbox))


if __name__ == "__main__":
    main(sys.argv)
