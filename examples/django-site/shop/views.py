from celery.result import AsyncResult
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from site_project.celery import app as celery_app

from .models import Product
from .tasks import RANKING_KEY, send_welcome_mail


def index(request):
    return JsonResponse(
        {
            "products": [{"name": p.name, "sales": p.sales} for p in Product.objects.all()],
            "pages": ["/ranking/", "/signup/?email=you@example.com", "/tasks/<id>/", "/healthz"],
        }
    )


def healthz(request):
    return HttpResponse("ok\n", content_type="text/plain")


def ranking(request):
    """The ranking as the last refresh cached it; the page never computes it itself."""
    value = cache.get(RANKING_KEY)
    if value is None:
        return JsonResponse(
            {"ranking": None, "computed_at": None, "detail": "not computed yet"}
        )
    return JsonResponse(value)


@csrf_exempt
@require_http_methods(["GET", "POST"])
def signup(request):
    """Enqueues the welcome mail and answers at once, whatever the SMTP server does."""
    email = request.POST.get("email") or request.GET.get("email", "")
    try:
        validate_email(email)
    except ValidationError:
        return JsonResponse({"error": "a valid ?email= is required"}, status=400)
    result = send_welcome_mail.delay(email)
    return JsonResponse({"email": email, "task_id": result.id, "status": "queued"}, status=202)


def task_status(request, task_id):
    """A task's state in the result backend: PENDING, RETRY, SUCCESS or FAILURE."""
    result = AsyncResult(task_id, app=celery_app)
    info = result.info
    if isinstance(info, BaseException):
        info = repr(info)
    return JsonResponse({"id": task_id, "state": result.state, "info": info})
