"""The site's background work, run by the WorkerPool's pods.

- `refresh_ranking`: the best sellers, computed from the database and written to the cache,
  which the `/ranking/` page only reads. Two PeriodicTasks run it: hourly at minute 0, and
  every 30 s for the demo.
- `send_welcome_mail`: the mail of a signup, enqueued by the `/signup/` view on the `mail`
  queue so the page returns at once; an SMTP error (the server's 451 "try again later", a
  refused connection, a timeout) retries it 10 s later, three times at most.
"""

import smtplib
import socket

from celery import shared_task
from celery.utils.log import get_task_logger
from django.core.cache import cache
from django.core.mail import send_mail
from django.utils import timezone

from .models import Product

logger = get_task_logger(__name__)

RANKING_KEY = "ranking"
# Longer than the hourly schedule: a late refresh never leaves the page without a ranking.
RANKING_TIMEOUT = 2 * 3600

WELCOME_SUBJECT = "Welcome to the shop"


def compute_ranking(limit=5):
    """The `limit` best sellers, most sales first."""
    top = Product.objects.order_by("-sales", "name")[:limit]
    return [{"rank": i, "name": p.name, "sales": p.sales} for i, p in enumerate(top, start=1)]


@shared_task(bind=True)
def refresh_ranking(self, limit=5):
    value = {
        "computed_at": timezone.now().isoformat(),
        # The worker pod and the task (a PeriodicTask's status shows its lastTaskId).
        "computed_by": socket.gethostname(),
        "task_id": self.request.id,
        "ranking": compute_ranking(limit),
    }
    cache.set(RANKING_KEY, value, timeout=RANKING_TIMEOUT)
    logger.info("ranking of %d products cached at %s", len(value["ranking"]), value["computed_at"])
    return value["computed_at"]


@shared_task(bind=True, max_retries=3, default_retry_delay=10)
def send_welcome_mail(self, email):
    attempt = self.request.retries + 1
    try:
        sent = send_mail(
            WELCOME_SUBJECT,
            "Thanks for signing up. Our best sellers are at /ranking/.",
            None,  # DEFAULT_FROM_EMAIL
            [email],
            fail_silently=False,
        )
    except (smtplib.SMTPException, OSError) as exc:
        # SMTPException covers a refused recipient (451) or sender; OSError a connection
        # refused or timed out. After max_retries, retry() raises exc: the task fails.
        logger.warning(
            "welcome mail to %s: attempt %d of %d failed: %r",
            email,
            attempt,
            self.max_retries + 1,
            exc,
        )
        raise self.retry(exc=exc)
    logger.info("welcome mail to %s sent on attempt %d", email, attempt)
    return {"to": email, "sent": sent, "attempts": attempt}
