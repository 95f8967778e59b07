"""Django settings of ``brainmatch serve`` (values come from :mod:`brainmatch.web.config`)."""

from __future__ import annotations

from brainmatch.web.config import load_config

BRAINMATCH = load_config()

SECRET_KEY = BRAINMATCH.secret_key
DEBUG = False
ALLOWED_HOSTS = BRAINMATCH.allowed_hosts

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "brainmatch.web.apps.WebConfig",
]

MIDDLEWARE = [
    "brainmatch.web.middleware.UploadLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "brainmatch.web.middleware.SecurityHeadersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "brainmatch.web.middleware.IdleTimeoutMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "brainmatch.web.urls"
WSGI_APPLICATION = "brainmatch.web.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "brainmatch.web.views.common.role_context",
            ],
        },
    }
]

DATABASES = {"default": BRAINMATCH.database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Django's default hasher: PBKDF2-SHA256, 1,000,000 iterations in Django 5.2.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/login/"

SESSION_COOKIE_AGE = BRAINMATCH.session_max_age_s
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_NAME = "brainmatch_session"
CSRF_COOKIE_NAME = "brainmatch_csrf"
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = BRAINMATCH.https
CSRF_COOKIE_SECURE = BRAINMATCH.https
if BRAINMATCH.https:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = 31536000
    CSRF_TRUSTED_ORIGINS = [f"https://{h}" for h in BRAINMATCH.allowed_hosts if h != "*"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# uploads: spooled to the private data folder, never to a public place
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_TEMP_DIR = str(BRAINMATCH.folder("tmp"))
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 200

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en"
USE_I18N = False

# Logs carry internal ids only: never a participant identifier, a file name or a value.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "brainmatch.web": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}
