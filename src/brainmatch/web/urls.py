"""URL map of the web service."""

from __future__ import annotations

from django.urls import path

from brainmatch.web.views import auth, clinician, manage, researcher

urlpatterns = [
    path("", auth.home, name="home"),
    path("login/", auth.login_view, name="login"),
    path("logout/", auth.logout_view, name="logout"),
    path("healthz", auth.healthz, name="healthz"),
    path("static/brainmatch.css", auth.stylesheet, name="css"),
    path("patients/", clinician.patient_list, name="patients"),
    path("patients/new/", clinician.patient_create, name="patient-create"),
    path("patients/<str:pk>/", clinician.patient_detail, name="patient"),
    path("patients/<str:pk>/status.json", clinician.patient_status, name="patient-status"),
    path("patients/<str:pk>/report.<str:fmt>", clinician.patient_report, name="patient-report"),
    path("patients/<str:pk>/profile.<str:fmt>", clinician.patient_profile, name="patient-profile"),
    path("patients/<str:pk>/delete/", clinician.patient_delete, name="patient-delete"),
    path("datasets/", researcher.dataset_list, name="datasets"),
    path("datasets/new/", researcher.dataset_create, name="dataset-create"),
    path("datasets/<str:pk>/", researcher.dataset_detail, name="dataset"),
    path("trainings/<str:pk>/", researcher.training_detail, name="training"),
    path("trainings/<str:pk>/report.html", researcher.training_report, name="training-report"),
    path("manage/users/", manage.users, name="manage-users"),
    path("manage/users/<int:pk>/", manage.user_update, name="manage-user"),
    path("manage/models/", manage.models, name="manage-models"),
    path("manage/models/<str:pk>/toggle/", manage.model_toggle, name="manage-model-toggle"),
    path(
        "manage/trainings/<str:pk>/deploy/", manage.deploy_training, name="manage-deploy-training"
    ),
    path("manage/studies/", manage.studies, name="manage-studies"),
    path("manage/audit/", manage.audit_log, name="manage-audit"),
]
