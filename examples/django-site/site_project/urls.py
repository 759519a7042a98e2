from django.urls import path

from shop import views

urlpatterns = [
    path("", views.index, name="index"),
    path("healthz", views.healthz, name="healthz"),
    path("ranking/", views.ranking, name="ranking"),
    path("signup/", views.signup, name="signup"),
    path("tasks/<str:task_id>/", views.task_status, name="task-status"),
]
