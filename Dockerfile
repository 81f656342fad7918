FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DJANGO_SETTINGS_MODULE=analemma.settings.production
WORKDIR /app
RUN useradd --create-home --uid 10001 analemma

COPY requirements.txt ./
COPY sdk ./sdk
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# collectstatic needs settings that load; the real values come from the environment at run time.
RUN SECRET_KEY=collectstatic-only-not-a-secret-0123456789abcdefghijklmnopqrstuvwxyz ALLOWED_HOSTS=localhost \
    python manage.py collectstatic --no-input

# Where the processes keep their /metrics counts (a volume shared by web, worker and beat in
# docker-compose.yml takes this folder's owner when first mounted).
RUN mkdir -p /run/analemma/metrics && chown analemma /run/analemma/metrics
USER analemma
EXPOSE 8000
ENV PROMETHEUS_MULTIPROC_DIR=/run/analemma/metrics/web
CMD ["gunicorn", "--config", "analemma/gunicorn_conf.py", "analemma.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
